"""The HTTP routes. FastAPI is the ``server`` extra, so it is imported here only when an app is built.

No ``from __future__ import annotations`` here: FastAPI reads the routes' annotations, and the classes
they name are imported inside :func:`create_app`.

Every answer is JSON (but a result's bytes); every refusal is ``{"detail": "<one line>"}``. Tracebacks go
to the server's log, never to a client. Parsing a volume and denoising never run on the event loop: uploads
are checked in a thread pool, jobs run in the worker thread.
"""
import asyncio
import logging
from contextlib import asynccontextmanager
from typing import Optional

from .. import __version__
from .auth import token_matches
from .jobs import JOB_ID, Job, JobStore, QueueFull
from .options import OptionError, one_line, parse_options
from .settings import ServerSettings
from .uploads import UploadRefused, UploadTooLarge, check_upload, discard_oversized, save_upload
from .worker import Worker

__all__ = ["create_app", "ApiError"]

log = logging.getLogger(__name__)

# Whole-volume reads that check uploads, at once: each holds a volume in memory.
_CHECKS_AT_ONCE = 2
# Bytes per piece of a result sent (Starlette's default, 64 KiB, makes a large result cost many round trips
# through the event loop).
_DOWNLOAD_PIECE = 1 << 20


class ApiError(Exception):
    """A refusal for the client: an HTTP status and one line."""

    def __init__(self, status: int, detail: str, headers: Optional[dict] = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers = status, one_line(detail), headers


def create_app(settings: ServerSettings):
    """The ASGI app serving ``settings``; its worker and expiry threads run while the app is up."""
    from fastapi import BackgroundTasks, Depends, FastAPI, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse

    store = JobStore(settings.work_dir, settings.queue_size, settings.result_ttl_s)
    worker = Worker(store, settings)
    checks: list = []  # the semaphore, made on the server's own event loop

    @asynccontextmanager
    async def lifespan(app):
        checks.append(asyncio.Semaphore(_CHECKS_AT_ONCE))
        store.start()
        worker.start()
        try:
            yield
        finally:
            store.close()
            await run_in_threadpool(worker.join)  # the running job stops before its next tile
            store.remove_all()

    # No /docs or /openapi.json: they would answer without the token.
    app = FastAPI(title="MedicalDenoise", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)

    async def refused(request: Request, exc: ApiError):
        return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=exc.headers)

    async def invalid(request: Request, exc: RequestValidationError):
        return JSONResponse({"detail": "invalid request"}, status_code=422)

    async def crashed(request: Request, exc: Exception):
        if type(exc).__name__ == "ClientDisconnect":
            log.warning("%s %s: the client went away", request.method, request.url.path)
        else:
            log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": "internal server error; the server log has the details"}, status_code=500)

    app.add_exception_handler(ApiError, refused)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(Exception, crashed)

    async def authorized(request: Request) -> None:
        if not token_matches(request.headers.get("authorization"), settings.token):
            raise ApiError(401, "missing or wrong token; send 'Authorization: Bearer <token>'",
                           {"WWW-Authenticate": "Bearer"})

    guarded = [Depends(authorized)]

    def known(job_id: str) -> str:
        # Ids are only ever looked up, never used as names; a malformed one is simply unknown.
        if not JOB_ID.fullmatch(job_id):
            raise ApiError(404, "unknown job")
        return job_id

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/info", dependencies=guarded)
    async def info():
        return {"version": __version__, "device": settings.device, "models": list(settings.models),
                "max_upload_mb": settings.max_upload_mb, "queue_size": settings.queue_size,
                "jobs_waiting": store.waiting()}

    @app.post("/jobs", status_code=202, dependencies=guarded)
    async def submit(request: Request):
        try:
            options = parse_options(request.query_params.multi_items(), settings.models)
        except OptionError as exc:
            raise ApiError(422, str(exc)) from None
        declared = _content_length(request.headers.get("content-length"))
        too_large = ApiError(413, f"the upload is larger than this server accepts ({settings.max_upload_mb:g} MB)")
        if declared is not None and declared > settings.max_upload_bytes:
            await discard_oversized(request.stream(), declared, settings.max_upload_bytes)
            raise too_large
        try:
            with store.reservation():
                job_id, upload, result = store.new_files(options)
                try:
                    await save_upload(request.stream(), upload, settings.max_upload_bytes)
                    async with checks[0]:
                        await run_in_threadpool(check_upload, upload, options.format, settings.max_upload_bytes)
                    store.submit(Job(job_id, options, upload, result))
                except BaseException:
                    upload.unlink(missing_ok=True)
                    raise
        except QueueFull:
            raise ApiError(503, f"the queue is full ({settings.queue_size} jobs waiting); try again later",
                           {"Retry-After": "10"}) from None
        except UploadTooLarge:
            raise too_large from None
        except UploadRefused as exc:
            raise ApiError(422, str(exc)) from None
        except OSError as exc:
            log.error("cannot store an upload in %s: %s", settings.work_dir, exc)
            raise ApiError(507, "the server cannot store the upload now") from None
        log.info("job %s: queued", job_id)
        return JSONResponse({"id": job_id, "state": "queued"}, status_code=202, headers={"Location": f"/jobs/{job_id}"})

    @app.get("/jobs/{job_id}", dependencies=guarded)
    async def status(job_id: str):
        snapshot = store.snapshot(known(job_id))
        if snapshot is None:
            raise ApiError(404, "unknown job")
        return snapshot

    @app.delete("/jobs/{job_id}", dependencies=guarded)
    async def delete(job_id: str):
        snapshot = store.cancel(known(job_id))
        if snapshot is None:
            raise ApiError(404, "unknown job")
        return snapshot

    @app.get("/jobs/{job_id}/result", dependencies=guarded)
    async def result(job_id: str, background: BackgroundTasks):
        state, job = store.claim_result(known(job_id))
        if state is None:
            raise ApiError(404, "unknown job")
        if job is None:
            raise ApiError(409, f"the job is {state}; its result can be fetched once it has succeeded")
        # A result is fetched once: removed after the response has been sent (one that breaks off is left to the
        # expiry, which counts from now).
        background.add_task(store.forget, job_id)
        response = FileResponse(job.result, media_type="application/octet-stream",
                                filename=f"denoised{job.options.suffix}", background=background)
        response.chunk_size = _DOWNLOAD_PIECE
        return response

    return app


def _content_length(value: Optional[str]) -> Optional[int]:
    if value is None:
        return None
    try:
        length = int(value)
    except ValueError:
        raise ApiError(400, "Content-Length is not a number") from None
    if length < 0:
        raise ApiError(400, "Content-Length is negative")
    return length
