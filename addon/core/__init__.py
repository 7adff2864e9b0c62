"""The add-on's bpy-free, torch-free core: what both sides of the wire stand on.

The wire protocol, the ZeroMQ client (the only module here that imports zmq), PLY io, camera
maths, the NeRF dataset layer (transforms.json), colour conversion and shared limits. The Blender
glue beside it (operators, panels, importer, render) uses it; the backend imports nothing else
from the add-on. Nothing here imports bpy, so all of it is tested fast and directly.
"""
