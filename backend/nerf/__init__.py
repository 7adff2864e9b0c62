"""NeRF from posed images: the dataset layer, fields, sampling, rays, rendering, training, points;
the server ops (``ops``) and the ``image2points nerf`` command (``cli``)."""
