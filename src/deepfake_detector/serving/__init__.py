"""The REST API and the web page (``deepfake-detector serve``; needs the ``serve`` extra).

``app`` builds the FastAPI application around a loaded `Detector`, ``service`` runs the library for it
(decoding off the event loop, micro-batched scoring through ``batching``), ``limits`` guards what
comes in, ``errors`` and ``schemas`` define what goes out, and ``static/`` is the page served at ``/``.
Nothing here is imported until the server is built.
"""
