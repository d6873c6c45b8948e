"""``medical-denoise serve``: denoising over HTTP for machines without a GPU.

One worker thread owns the device and runs the queued jobs one at a time; clients upload a volume, poll its
job and download the result, which lies on the input's exact grid in the input's pixel type and format.

- ``settings.py``: what the server was started with, and the checks made before it starts
- ``auth.py``: the bearer token
- ``options.py``: a job's query options, parsed as the command line parses them
- ``uploads.py``: a bounded, streamed upload and the checks on its content
- ``jobs.py``: jobs, their states, the bounded queue and the expiry of results
- ``worker.py``: the thread that runs the jobs on the device
- ``app.py``: the HTTP routes (FastAPI, the ``server`` extra, imported only when a server is built)
- ``runner.py``: binds the socket and runs uvicorn
- ``client.py``: the client, ``medical-denoise denoise IN OUT --server URL`` (``requests``, imported when used)
"""
