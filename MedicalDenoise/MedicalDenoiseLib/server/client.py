"""The client of ``medical-denoise serve``: ``medical-denoise denoise IN OUT --server URL [--token-file F]``.

The input is read here, in any format the command line reads, and sent as an uncompressed NRRD whatever its
own format (nothing to compress or decompress on either side); the result comes back the same way and is
written here by the command line's own writer against the input, so the output is what a local run writes:
the input's exact grid and pixel type, its format or a DICOM series, atomically. Interrupting the client
(Ctrl-C, SIGTERM, Slicer's Cancel) deletes the job on the server and writes nothing.

``requests`` (the ``server`` extra) is imported only when a client is made. Proxies come from the
environment (``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``, ``NO_PROXY``), but a server on this machine
(``localhost``, 127.0.0.0/8, ``::1``) is always reached directly.
"""
from __future__ import annotations

import gzip
import re
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping
from urllib.parse import urlencode, urlsplit, urlunsplit

import numpy as np

from ..errors import MedicalDenoiseError, OutputError
from ..io.volume import Volume
from .settings import is_loopback, read_token

__all__ = ["ServerClient", "ServerError", "connect", "denoise_file", "encode_nrrd", "decode_nrrd"]

# Seconds to open a connection, and to wait for the next bytes of an answer (an upload is checked whole
# before the server answers, hence the longer wait after sending one).
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 60.0
UPLOAD_READ_TIMEOUT_S = 600.0
# A full queue (503) is tried again this many times, waiting what the server's Retry-After asks (within bounds).
RETRIES = 3
_RETRY_WAIT_S = (1.0, 60.0)
# Polling: fast at first and near the end, at most every _POLL_MAX_S in between.
_POLL_MIN_S, _POLL_MAX_S = 0.05, 0.5
_PIECE = 4 << 20  # bytes per piece sent or read
_DOWNLOAD_NAME = "upload.nrrd"  # how the server names the upload in its messages
_NO_PROXY = {"http": None, "https": None, "all": None}

# Options of a local run that a server cannot honour: refused rather than ignored.
_LOCAL_ONLY = (("adapt", "--adapt", "fitting the model to the scan runs only locally"),
               ("save_adapted", "--save-adapted", "fitting the model to the scan runs only locally"),
               ("flips", "--flips", "the server does not average over flips"),
               ("tile", "--tile", "the server uses its own tile size"),
               ("no_refine", "--no-refine", "the server always refines the network's output"))


class ServerError(MedicalDenoiseError):
    """The server could not be reached, refused a request, or failed a job; one line for the user."""


@dataclass(frozen=True)
class _Answer:
    status: int
    json: dict
    headers: Mapping[str, str]


class ServerClient:
    """One ``medical-denoise serve`` server: submit a volume, follow its job, fetch or cancel it.

    Args:
        url: the server's address, ``http(s)://host[:port][/prefix]``.
        token: the bearer token, or None for a server on loopback without one. Sent, never shown.
        note: where the client's notes go (a full queue being retried); one line each.
        sleep: waits between polls and retries (tests pass their own).
    """

    def __init__(self, url: str, token: str | None = None, *, note: Callable[[str], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        try:
            import requests
        except ImportError:
            raise ServerError("--server needs the requests package: pip install 'medical-denoise[server]'") from None
        self._requests = requests
        self.url, self.shown = _base_url(url)
        self._note = note or (lambda line: print(f"medical-denoise: note: {line}", file=sys.stderr, flush=True))
        self._sleep = sleep
        self.session = requests.Session()
        self.session.trust_env = True  # HTTP(S)_PROXY, NO_PROXY, REQUESTS_CA_BUNDLE ...
        self.session.headers["User-Agent"] = "medical-denoise-client"
        if token is not None:
            self.session.headers["Authorization"] = f"Bearer {token}"
        self._token = token is not None
        host = urlsplit(self.url).hostname or ""
        self._proxies = dict(_NO_PROXY) if is_loopback(host) else None
        self.info: dict = {}

    def close(self) -> None:
        self.session.close()

    # -- requests -----------------------------------------------------------------------------------------

    def _call(self, method: str, path: str, *, read_timeout: float = READ_TIMEOUT_S, what: str = "",
              **kwargs):
        requests = self._requests
        try:
            return self.session.request(method, self.url + path, timeout=(CONNECT_TIMEOUT_S, read_timeout),
                                        proxies=self._proxies, allow_redirects=False, **kwargs)
        except requests.exceptions.ConnectTimeout:
            raise ServerError(f"server unreachable at {self.shown} (no answer within {CONNECT_TIMEOUT_S:g} s)") from None
        except requests.exceptions.ReadTimeout:
            raise ServerError(f"the server at {self.shown} did not answer within {read_timeout:g} s{what}") from None
        except requests.exceptions.ProxyError as exc:
            raise ServerError(f"server unreachable at {self.shown} through the proxy ({_reason(exc)})") from None
        except requests.exceptions.SSLError as exc:
            raise ServerError(f"server unreachable at {self.shown}: TLS failed ({_reason(exc)})") from None
        except requests.exceptions.ConnectionError as exc:
            if what:
                raise ServerError(f"lost the connection to the server at {self.shown}{what} ({_reason(exc)})") from None
            raise ServerError(f"server unreachable at {self.shown} ({_reason(exc)})") from None
        except requests.exceptions.RequestException as exc:
            raise ServerError(f"the request to the server at {self.shown} failed ({_reason(exc)})") from None

    def _json(self, response) -> _Answer:
        if 300 <= response.status_code < 400:
            where = response.headers.get("Location", "elsewhere")
            raise ServerError(f"{self.shown} redirects ({response.status_code}) to {_one_line(where, 120)}; give that "
                              "address as --server")
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise ServerError(f"{self.shown} answered {response.status_code} without the JSON a medical-denoise server "
                              "sends; is the URL right?")
        return _Answer(response.status_code, body, response.headers)  # case-insensitive

    def _refusal(self, answer: _Answer, doing: str) -> ServerError:
        """The error for a status the caller does not handle itself."""
        detail = _one_line(str(answer.json.get("detail", "")))
        if answer.status == 401:
            if self._token:
                return ServerError("token refused by the server (401); check --token-file")
            return ServerError("the server requires a token (401); give --token-file")
        return ServerError(f"{doing} ({answer.status}): {detail or 'no reason given'}")

    def check(self) -> dict:
        """Asks ``/info``: reachable, the token accepted, and what the server offers."""
        answer = self._json(self._call("GET", "/info"))
        if answer.status != 200:
            raise self._refusal(answer, f"the server at {self.shown} refused /info")
        self.info = answer.json
        return self.info

    # -- one job ------------------------------------------------------------------------------------------

    def submit(self, volume: Volume, options: dict) -> str:
        """Uploads ``volume`` with the job's ``options`` (query values) and returns the job's id.

        A full queue (503) is tried again :data:`RETRIES` times, after the wait the server asks for.
        """
        query = urlencode({"format": "nrrd", **{k: v for k, v in options.items() if v not in (None, "")}})
        for attempt in range(RETRIES + 1):
            body = _NrrdBody(volume.array, volume.geometry)
            answer = self._json(self._call("POST", f"/jobs?{query}", data=body, read_timeout=UPLOAD_READ_TIMEOUT_S,
                                           what=" during the upload",
                                           headers={"Content-Type": "application/octet-stream"}))
            if answer.status == 202 and isinstance(answer.json.get("id"), str):
                return answer.json["id"]
            if answer.status == 503 and attempt < RETRIES:
                wait = _retry_after(answer.headers.get("Retry-After"))
                self._note(f"the server's queue is full; trying again in {wait:g} s ({attempt + 1} of {RETRIES})")
                self._sleep(wait)
                continue
            if answer.status == 503:
                raise ServerError(f"the server's queue stayed full after {RETRIES + 1} tries; try again later")
            if answer.status in (413, 422):
                detail = _one_line(str(answer.json.get("detail", "")))
                raise ServerError(f"the server refused the upload: {detail}")
            raise self._refusal(answer, "the server refused the upload")
        raise AssertionError("unreachable")

    def status(self, job_id: str) -> dict:
        answer = self._json(self._call("GET", f"/jobs/{job_id}"))
        if answer.status == 404:
            raise ServerError(f"the server no longer knows job {job_id} (was it restarted?)")
        if answer.status != 200:
            raise self._refusal(answer, "the server refused the job's status")
        return answer.json

    def wait(self, job_id: str, progress: Callable[[float], None] | None = None) -> dict:
        """Polls the job until it has ended and returns its last state; ``progress`` gets its fraction done."""
        interval = _POLL_MIN_S
        while True:
            job = self.status(job_id)
            if progress is not None:
                progress(float(job.get("progress") or 0.0))
            if job.get("state") not in ("queued", "running"):
                return job
            near_end = float(job.get("progress") or 0.0) >= 0.97
            interval = _POLL_MIN_S if near_end else min(interval * 1.5, _POLL_MAX_S)
            self._sleep(interval)

    def download(self, job_id: str) -> bytearray:
        """The job's result (the server forgets the job once it has sent it)."""
        response = self._call("GET", f"/jobs/{job_id}/result", stream=True, what=" during the download")
        with response:
            if response.status_code != 200:
                raise self._refusal(self._json(response), "the server refused the result")
            length = response.headers.get("Content-Length")
            data = bytearray()
            try:
                for piece in response.iter_content(_PIECE):
                    data += piece
            except self._requests.exceptions.RequestException as exc:
                raise ServerError(f"lost the connection to the server at {self.shown} during the download "
                                  f"({_reason(exc)})") from None
        if length is not None and length.isdigit() and int(length) != len(data):
            raise ServerError(f"the download from {self.shown} broke off ({len(data)} of {length} bytes)")
        return data

    def cancel(self, job_id: str) -> None:
        """Deletes the job on the server (a running one stops before its next tile); never raises."""
        try:
            self.session.request("DELETE", f"{self.url}/jobs/{job_id}", timeout=(CONNECT_TIMEOUT_S, 10.0),
                                 proxies=self._proxies, allow_redirects=False).close()
        except Exception:  # noqa: BLE001 - the interruption being handled matters more; the server expires it
            pass

    def denoise(self, volume: Volume, options: dict, progress: Callable[[float], None] | None = None
                ) -> tuple[np.ndarray, str]:
        """Upload, follow, download: the denoised voxels (the input's shape) and the server's summary line.

        Whatever interrupts this (KeyboardInterrupt from Ctrl-C or SIGTERM, Cancelled, an error) deletes the
        job on the server before it propagates.

        Raises:
            ServerError: the server refused the upload, the job failed or was cancelled there, or the
                connection failed.
        """
        job_id = self.submit(volume, options)
        try:
            job = self.wait(job_id, progress)
            state = job.get("state")
            if state == "failed":
                raise ServerError(f"job failed: {_one_line(str(job.get('error') or 'no reason given'))}")
            if state != "succeeded":
                raise ServerError(f"the server ended the job as {state} (is it stopping?)")
            data = self.download(job_id)
        except BaseException:
            self.cancel(job_id)
            raise
        array = decode_nrrd(data)
        if array.shape != volume.array.shape:
            raise ServerError(f"the server's result has shape {array.shape}, not the input's {volume.array.shape}")
        return array, str(job.get("summary") or "")


# -- the command line's side ----------------------------------------------------------------------------------

def connect(args) -> ServerClient:
    """The client for ``denoise --server``, checked before anything is read or written: the options a server
    can honour, the token file, the server reachable and accepting the token, and ``--model`` one it has.
    ``--device`` is not the client's to choose: the server runs on its own (the summary names it)."""
    for name, option, why in _LOCAL_ONLY:
        if getattr(args, name, None):
            raise ServerError(f"{option} cannot be used with --server: {why}")
    token = read_token(args.token_file) if args.token_file is not None else None
    client = ServerClient(args.server, token)
    info = client.check()
    models = [str(m) for m in info.get("models") or []]
    if args.model and args.model not in models:
        raise ServerError(f"--model {args.model}: the server at {client.shown} has no such model; it has: "
                          f"{', '.join(models) or 'none'} (a model file stays on this machine: run without --server)")
    return client


def job_options(args, volume: Volume) -> dict:
    """The job's query options, meaning what they mean to a local run (a DICOM's modality tag included, since
    the NRRD sent carries none)."""
    grain = args.grain if isinstance(args.grain, str) else ",".join(map(str, args.grain))
    strength = args.strength if isinstance(args.strength, str) else repr(float(args.strength))
    modality = volume.modality if args.modality == "auto" and volume.modality else args.modality
    return {"model": args.model or None, "strength": strength, "modality": modality, "grain": grain}


def denoise_file(client: ServerClient, source: Path, target: Path, args,
                 progress_factory: Callable[[], Callable[[float], None]]) -> None:
    """``denoise`` of one input on the server: read here, denoise there, written here as a local run writes it,
    and the same summary line printed."""
    from ..io.reading import read_volume
    from ..io.writing import write_volume

    volume = read_volume(source)
    limit = float(client.info.get("max_upload_mb") or 0)
    size = volume.array.nbytes / 2**20
    if limit and size > limit:
        raise ServerError(f"{source}: {size:.0f} MB of voxels is more than the server at {client.shown} accepts "
                          f"({limit:g} MB)")
    progress = progress_factory()
    try:
        try:
            array, summary = client.denoise(volume, job_options(args, volume), progress)
        except ServerError as exc:
            raise ServerError(_name_source(str(exc), source)) from None
    finally:
        progress.close()
    denoised = volume.with_array(array)
    write_volume(denoised, target, reference=volume, overwrite=args.overwrite)
    print(f"{source} -> {target}: {summary}", flush=True)
    if args.preview is not None:
        from ..evaluation.preview import comparison_png

        preview = args.preview if len(args.jobs) == 1 else args.preview.with_name(f"{target.stem}_{args.preview.name}")
        comparison_png(preview, [("input", volume.array), ("denoised", array),
                                 ("residual", volume.array.astype("float32") - array)])


def _name_source(message: str, source: Path) -> str:
    """A server message names the upload as ``upload.nrrd``: name the user's input instead, or put it first."""
    if _DOWNLOAD_NAME in message:
        return message.replace(_DOWNLOAD_NAME, str(source))
    return f"{source}: {message}"


# -- NRRD both ways -------------------------------------------------------------------------------------------

_NRRD_TYPES = {"int8": "int8", "uint8": "uint8", "int16": "int16", "uint16": "uint16", "int32": "int32",
               "uint32": "uint32", "int64": "int64", "uint64": "uint64", "float32": "float", "float64": "double"}
_NUMPY_TYPES = {
    **{name: np.dtype(name) for name in ("int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64")},
    "signed char": np.dtype("int8"), "int8_t": np.dtype("int8"), "char": np.dtype("int8"),
    "uchar": np.dtype("uint8"), "unsigned char": np.dtype("uint8"), "uint8_t": np.dtype("uint8"),
    "short": np.dtype("int16"), "short int": np.dtype("int16"), "signed short": np.dtype("int16"),
    "signed short int": np.dtype("int16"), "int16_t": np.dtype("int16"),
    "ushort": np.dtype("uint16"), "unsigned short": np.dtype("uint16"), "unsigned short int": np.dtype("uint16"),
    "uint16_t": np.dtype("uint16"),
    "int": np.dtype("int32"), "signed int": np.dtype("int32"), "int32_t": np.dtype("int32"),
    "uint": np.dtype("uint32"), "unsigned int": np.dtype("uint32"), "uint32_t": np.dtype("uint32"),
    "longlong": np.dtype("int64"), "long long": np.dtype("int64"), "long long int": np.dtype("int64"),
    "signed long long": np.dtype("int64"), "signed long long int": np.dtype("int64"), "int64_t": np.dtype("int64"),
    "ulonglong": np.dtype("uint64"), "unsigned long long": np.dtype("uint64"),
    "unsigned long long int": np.dtype("uint64"), "uint64_t": np.dtype("uint64"),
    "float": np.dtype("float32"), "double": np.dtype("float64"),
}


def _vector(values) -> str:
    return "(" + ",".join(repr(float(v)) for v in values) + ")"


def nrrd_header(array: np.ndarray, geometry) -> bytes:
    """The header of an uncompressed, little-endian NRRD holding ``array`` on ``geometry`` (what SimpleITK
    writes, with every number in its exact shortest form)."""
    n = array.ndim
    direction = np.reshape(geometry.direction, (n, n))
    axes = " ".join(_vector(direction[:, j] * geometry.spacing[j]) for j in range(n))
    lines = ["NRRD0004", f"type: {_NRRD_TYPES[_sendable(array.dtype).name]}", f"dimension: {n}",
             "space: left-posterior-superior" if n == 3 else f"space dimension: {n}",
             "sizes: " + " ".join(str(s) for s in array.shape[::-1]), f"space directions: {axes}",
             "kinds: " + " ".join(["domain"] * n), "endian: little", "encoding: raw",
             f"space origin: {_vector(geometry.origin)}"]
    return ("\n".join(lines) + "\n\n").encode("ascii")


def _sendable(dtype: np.dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return np.dtype("uint8")
    if dtype == np.float16:
        return np.dtype("float32")
    if dtype.newbyteorder("=").name not in _NRRD_TYPES:
        raise OutputError(f"pixel type {dtype} cannot be sent to a server")
    return dtype.newbyteorder("<")


class _NrrdBody:
    """An uncompressed NRRD as an upload body, sent from the array's own memory in pieces (no copy of the
    voxels is made for it); its length gives the request a Content-Length."""

    def __init__(self, array: np.ndarray, geometry) -> None:
        self._array = np.ascontiguousarray(array, dtype=_sendable(array.dtype))
        self._header = nrrd_header(self._array, geometry)

    def __len__(self) -> int:
        return len(self._header) + self._array.nbytes

    def __iter__(self) -> Iterator[bytes | memoryview]:
        yield self._header
        data = memoryview(self._array.reshape(-1)).cast("B")
        for start in range(0, len(data), _PIECE):
            yield data[start:start + _PIECE]


def encode_nrrd(array: np.ndarray, geometry) -> bytes:
    """``array`` on ``geometry`` as the bytes of an uncompressed NRRD."""
    return b"".join(bytes(piece) for piece in _NrrdBody(array, geometry))


def decode_nrrd(data: bytes | bytearray) -> np.ndarray:
    """The voxels of a NRRD file's bytes ((z, y, x) order), raw or gzip-encoded, its data inline.

    Only the fields that place the bytes are read: the grid of the output is the input's, as in a local run.

    Raises:
        ServerError: not a NRRD with inline raw or gzip data of a scalar pixel type.
    """
    end = data.find(b"\n\n", 0, 1 << 16)
    if not data.startswith(b"NRRD000") or end < 0:
        raise ServerError("the server's result is not a NRRD file")
    fields: dict[str, str] = {}
    for line in data[:end].decode("latin-1").splitlines()[1:]:
        if line.startswith("#") or ":" not in line or ":=" in line:
            continue
        key, value = line.split(":", 1)
        fields[key.strip().lower().replace(" ", "")] = value.strip()
    if "datafile" in fields or "lineskip" in fields or "byteskip" in fields:
        raise ServerError("the server's result names a separate data file or skips bytes; not accepted")
    try:
        dtype = _NUMPY_TYPES[" ".join(fields["type"].lower().split())]
        shape = tuple(int(s) for s in fields["sizes"].split())[::-1]
        encoding = fields.get("encoding", "raw").lower()
    except (KeyError, ValueError):
        raise ServerError("the server's result has a NRRD header this client cannot read") from None
    if dtype.itemsize > 1:
        dtype = dtype.newbyteorder(">" if fields.get("endian", "little").lower() == "big" else "<")
    payload = memoryview(data)[end + 2:]
    if encoding in ("gz", "gzip"):
        try:
            payload = memoryview(gzip.decompress(payload))
        except (OSError, EOFError, zlib.error):
            raise ServerError("the server's result is not valid gzip data") from None
    elif encoding != "raw":
        raise ServerError(f"the server's result has NRRD encoding {encoding!r}; expected raw or gzip")
    count = int(np.prod(shape))
    if len(payload) < count * dtype.itemsize:
        raise ServerError(f"the server's result is cut short ({len(payload)} of {count * dtype.itemsize} bytes)")
    array = np.frombuffer(payload, dtype=dtype, count=count).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=False) if dtype.byteorder == ">" else array


# -- small things ---------------------------------------------------------------------------------------------

def _base_url(url: str) -> tuple[str, str]:
    """The URL requests are made under (no trailing slash), and the same without any user:password, to show."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ServerError(f"--server {url!r}: give the server's address as http://HOST:PORT (or https://...)")
    try:
        parts.port
    except ValueError:
        raise ServerError(f"--server {url!r}: the port is not a number in 0-65535") from None
    base = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return base, urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def _retry_after(value: str | None) -> float:
    try:
        wait = float(value) if value is not None else 10.0
    except ValueError:
        wait = 10.0
    low, high = _RETRY_WAIT_S
    return min(max(wait, low), high)


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _reason(exc: BaseException) -> str:
    """The last, most specific words of a requests / urllib3 error, on one line."""
    text = str(exc)
    found = re.findall(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    if found:
        return found[-1].strip()
    for name in ("Connection refused", "Name or service not known", "timed out", "Connection reset by peer",
                 "Broken pipe", "Remote end closed connection"):
        if name.lower() in text.lower():
            return name.lower() if name[0].islower() else name
    return _one_line(type(exc).__name__ + (f": {text}" if len(text) < 120 else ""), 160)
