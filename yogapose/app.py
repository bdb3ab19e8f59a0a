"""Orchestration: a request's image sources -> bytes -> tensor -> probabilities per label.

Data flows one way: ``edge`` tells what the event asks for, ``fetch`` (URLs, S3) or base64
decoding yields bytes, ``preprocess`` decodes them and crops the people the detector finds as
the model metadata says, ``runtime`` infers, ``answer`` turns outputs into probabilities and
a verdict, and ``edge`` shapes the response.

Direct invokes get the result or a typed :class:`~yogapose.errors.PoseError`; HTTP events
always get a response dict (errors as JSON with their status; anything unexpected as a 500
``internal_error`` whose details only go to the logs).
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, assert_never

import numpy as np

from . import __version__, answer, b64, edge
from .config import Settings, load_settings
from .errors import BadRequest, NotFound, PayloadTooLarge, PoseError, echo
from .metadata import load_metadata
from .observability import RequestStats, logger, redact
from .preprocess import Framed, Preprocessor
from .runtime import Model

SINGLE_FIELDS = ("url", "image")
BATCH_FIELDS = ("urls", "images")
FIELDS = SINGLE_FIELDS + BATCH_FIELDS
DETAILS_FIELD = "details"  # opt-in detailed answer (verdict, calibrated confidence, person box)
_ONE_OF = "send exactly one of: url, image, urls, images"


class App:
    """Everything a request needs: settings plus the loaded model."""

    def __init__(self, settings: Settings, model: Model, preprocessor: Preprocessor | None = None) -> None:
        self.settings = settings
        self.model = model
        self.metadata = model.metadata
        self.labels = tuple(model.metadata.labels)
        self.version = model.metadata.version
        self.preprocessor = preprocessor if preprocessor is not None else _preprocessor(model)

    # ----------------------------------------------------------------- entry point

    def handle(self, event: Any, stats: RequestStats | None = None) -> Any:
        """Answer any event: direct (returns the result, raises PoseError) or HTTP."""
        stats = stats if stats is not None else RequestStats()
        try:
            # Inside the guard: from ipython an event may hold objects no JSON has (a numpy
            # array's truth value raises), and such an error must not escape untyped.
            kind = edge.event_kind(event)  # a non-object event is a malformed direct invoke
            stats.kind = kind
            if kind not in ("direct", "map_batch", "s3_event"):
                return self.handle_http(event, kind, stats)  # answers every error itself
            if kind == "direct":
                return self.predict_payload(event, stats)
            from . import batch  # bulk runs only: kept out of the HTTP path's imports

            return batch.handle(self, event, kind, stats, stats.deadline)
        except PoseError:
            raise
        except Exception as exc:
            logger.exception("unexpected error in a %s invoke", stats.kind)
            raise PoseError("internal error; see the function's logs") from exc

    def handle_http(self, event: dict, kind: str, stats: RequestStats) -> dict:
        stats.kind = kind  # the fetch's s3:// rule depends on it
        headers = {"X-Model-Version": self.version}
        method = None
        try:
            req = edge.parse_http(event, kind)
            method = req.method
            if edge.varies_by_accept(req):
                headers["Vary"] = "Accept"
            action = edge.route(req)
            stats.route = action
            resp = self.respond(action, req, headers, stats)
        except PoseError as exc:
            stats.error(exc.code)
            if stats.route == "predict":
                headers["Server-Timing"] = stats.server_timing()
            resp = edge.error_response(exc, headers)
        except Exception:  # noqa: BLE001 - logged; the client gets a 500 without details
            logger.exception("unexpected error in an HTTP request")
            stats.error("internal_error")
            resp = edge.error_response(PoseError("internal error; see the function's logs"), headers)
        if method == "HEAD":
            resp = edge.head_only(resp)
        stats.status = resp["statusCode"]
        return resp

    def respond(self, action: edge.Action, req: edge.HttpRequest, headers: dict[str, str],
                stats: RequestStats) -> dict:
        """One responder per action of ``edge.ROUTE_TABLE`` (mypy checks none is missing)."""
        match action:
            case edge.Action.OPTIONS:
                return edge.empty_response(204, {"Allow": ", ".join(edge.allowed_methods(req))})
            case edge.Action.PAGE:
                return self.page_response(headers)
            case edge.Action.HEALTH:
                return edge.json_response(200, self.health(), headers)
            case edge.Action.PREDICT:
                body = edge.read_body(req, self.settings.max_bytes)
                details = edge.wants_details(req)
                if body.image is not None:
                    result: Any = self.result(self.classify(body.image, stats), details)
                else:
                    result = self.predict_payload(body.json, stats, details)
                return edge.json_response(200, result, {**headers, "Server-Timing": stats.server_timing()})
        assert_never(action)

    # ----------------------------------------------------------------- payloads

    def predict_payload(self, payload: Any, stats: RequestStats, details: bool = False) -> dict | list[dict]:
        """``{"url"|"image": str}`` -> probabilities; ``{"urls"|"images": [...]}`` -> a list.

        ``"details": true`` in the payload (or ``details`` from the query string) asks for
        the detailed answer, for the one image or for every item of a batch.
        """
        field, value = self.validate(payload)
        details = details or payload.get(DETAILS_FIELD, False)
        if field == "url":
            return self.classify_url(value, stats, details)
        if field == "image":
            return self.classify_base64(value, stats, field, details)
        results: list[dict] = []
        for i, item in enumerate(value):
            name = f"{field}[{i}]"
            try:
                stats.deadline.check(f"{name} was processed")  # a per-item 504, not a killed invocation
                if field == "urls":
                    results.append(self.classify_url(item, stats, details))
                else:
                    results.append(self.classify_base64(item, stats, name, details))
            except PoseError as exc:
                stats.error(exc.code)
                results.append({"error": exc.to_dict()})
            except Exception:  # noqa: BLE001 - logged; one bad item must not sink the batch
                logger.exception("unexpected error in batch item %s", name)
                stats.error("internal_error")
                results.append({"error": PoseError("internal error; see the function's logs").to_dict()})
        return results

    def validate(self, payload: Any) -> tuple[str, Any]:
        """The one input field and its value; BadRequest naming the field otherwise."""
        if not isinstance(payload, dict):
            raise BadRequest(f"request must be a JSON object, got {edge.type_name(payload)}; {_ONE_OF}")
        unknown = [str(k) for k in payload if k not in FIELDS and k != DETAILS_FIELD]  # ipython may pass any key
        if unknown:
            raise BadRequest(f"unknown field(s) {_names(unknown)}; {_ONE_OF}")
        present = [k for k in FIELDS if k in payload]
        if not present:
            raise BadRequest(f"no input given; {_ONE_OF}")
        if len(present) > 1:
            raise BadRequest(f"fields {', '.join(present)} cannot be combined; {_ONE_OF}")
        _check_details(payload)
        field = present[0]
        value = payload[field]
        if field in SINGLE_FIELDS:
            if not isinstance(value, str):
                raise BadRequest(f"field {field!r} must be a string, got {edge.type_name(value)}")
            if not value.strip():
                raise BadRequest(f"field {field!r} is empty")
            return field, value
        self._validate_batch(field, value)
        return field, value

    def _validate_batch(self, field: str, value: Any) -> None:
        if not isinstance(value, list):
            raise BadRequest(f"field {field!r} must be an array of strings, got {edge.type_name(value)}")
        if not value:
            raise BadRequest(f"field {field!r} is an empty array")
        limit = self.settings.batch_limit
        if len(value) > limit:
            raise BadRequest(f"field {field!r} has {len(value)} items, over the batch limit of {limit}")
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise BadRequest(f"{field}[{i}] must be a string, got {edge.type_name(item)}")

    # ----------------------------------------------------------------- sources

    def classify_url(self, url: str, stats: RequestStats, details: bool = False) -> dict[str, Any]:
        # Imported on first use: uploads (the web page, raw bodies, base64) never need the
        # HTTP/TLS stack, and leaving it out of the init phase saves ~35 ms of cold start.
        from .fetch import FetchLimits, fetch

        stats.sources.append(redact(url))
        limits = FetchLimits.from_settings(self.settings, stats.deadline, over_http=stats.kind in edge.HTTP_KINDS)
        with stats.timer("fetch"):
            fetched = fetch(url, limits)
        stats.bytes_fetched += fetched.bytes_read
        return self.result(self.classify(fetched.data, stats), details)

    def classify_base64(self, text: str, stats: RequestStats, field: str = "image",
                        details: bool = False) -> dict[str, Any]:
        with stats.timer("fetch"):
            data = b64.decode_payload(text, field, self.settings.max_bytes)
        return self.result(self.classify(data, stats), details)

    def classify(self, data: bytes, stats: RequestStats | None = None) -> answer.Answer:
        """Image bytes -> :class:`~yogapose.answer.Answer` (six probabilities + verdict).

        Stages (timed): decode, detect (find the person candidates, crop, resize), infer
        (scale into the interpreter's input and run it, once per candidate, and once more
        mirrored for a candidate the model is unsure of, :meth:`infer`; the answer is for the
        candidate most in scope, :func:`~yogapose.answer.most_in_scope`).
        """
        stats = stats if stats is not None else RequestStats()
        limit = self.settings.max_bytes
        if len(data) > limit:
            raise PayloadTooLarge(f"image is {len(data)} bytes, over the limit of {limit}")
        pre = self.preprocessor
        with stats.timer("decode"):
            img = pre.decode(data, self.settings.max_pixels, stats.deadline)
        with stats.timer("detect"):
            frames = pre.frames(img, deadline=stats.deadline)
        with stats.timer("infer"):
            raws = []
            for f in frames:
                stats.deadline.check("every person in the photo was classified")
                raws.append(self.infer(f, stats))
        pick = answer.most_in_scope(raws, self.metadata)
        result = answer.build(raws[pick], self.metadata, frames[pick].person_dict(), pre.detector is not None)
        stats.images += 1
        if result.pose is not None:  # a pose for an empty room or a cat is not a prediction
            stats.predicted[result.pose] += 1
        stats.verdicts[result.verdict] += 1
        return result

    def infer(self, framed: Framed, stats: RequestStats) -> np.ndarray:
        """One crop's raw outputs. When the top two are close (:func:`~yogapose.answer.unsure`),
        the mirrored crop is classified too and the two averaged: every pose is left/right
        symmetric, and a second view settles near-ties (val, on the weights it came with: real-photo
        macro recall 0.936 -> 0.944, false-positive rate at 95 % 0.112 -> 0.098) for one more
        inference on those crops only."""
        pre = self.preprocessor
        # Scaling writes straight into the interpreter's input tensor (no temporary).
        raw = self.model.predict_with(functools.partial(_fill, pre, framed))
        if not answer.unsure(raw, self.metadata):
            return raw
        stats.flipped += 1
        mirrored = self.model.predict_with(functools.partial(_fill_mirrored, pre, framed))
        return (raw + mirrored) * np.float32(0.5)

    def classify_bytes(self, data: bytes, stats: RequestStats | None = None) -> dict[str, float]:
        """Image bytes -> ``{label: probability}`` for every label, summing to 1."""
        return self.classify(data, stats).probabilities

    @staticmethod
    def result(ans: answer.Answer, details: bool) -> dict[str, Any]:
        """The answer's JSON: six probabilities (default) or the detailed verdict."""
        return ans.detailed() if details else ans.probabilities

    # ----------------------------------------------------------------- other routes

    def health(self) -> dict[str, Any]:
        meta = self.metadata
        return {
            "status": "ok",
            "service": "yoga-pose",
            "version": __version__,
            "model": {
                "name": meta.name,
                "version": meta.version,
                "sha256": meta.sha256,
                "labels": list(meta.labels),
                "input_shape": list(meta.input_shape),
                "input_dtype": meta.input_dtype,
                "quantization": meta.quantization,
            },
            "person_crop": meta.preprocessing.person_crop.to_dict() if meta.preprocessing.person_crop else None,
            "open_set": meta.open_set.to_dict() if meta.open_set else None,
            "unsure_threshold": self.settings.unsure_threshold,
            "limits": {
                "max_image_bytes": self.settings.max_bytes,
                "max_image_pixels": self.settings.max_pixels,
                "batch_limit": self.settings.batch_limit,
            },
        }

    def page_response(self, headers: dict[str, str]) -> dict:
        try:
            from . import web  # the web helper's module; optional in a trimmed build
        except ImportError:
            raise NotFound("the web page is not part of this build; use POST /predict") from None
        page_headers = dict(getattr(web, "PAGE_HEADERS", {"Content-Type": "text/html; charset=utf-8"}))
        content_type = page_headers.pop("Content-Type", "text/html; charset=utf-8")
        return edge.response(200, web.index_html(), content_type, {**headers, **page_headers})


def _names(keys: list[str], most: int = 5) -> str:
    """The caller's field names for an error message: a few, each cut short (errors.echo)."""
    shown = ", ".join(echo(k) for k in sorted(keys[:100])[:most])
    return shown + (f" and {len(keys) - most} more" if len(keys) > most else "")


def _check_details(payload: dict) -> None:
    if not isinstance(payload.get(DETAILS_FIELD, False), bool):
        raise BadRequest(f"field {DETAILS_FIELD!r} must be true or false, got {edge.type_name(payload[DETAILS_FIELD])}")


# --------------------------------------------------------------------------- cached app


@functools.lru_cache(maxsize=4)
def _loaded(model_path: str, num_threads: int) -> tuple[Model, Preprocessor]:
    """The model and its preprocessor, the person detector loading on a second thread while
    LiteRT loads the classifier (hashing and invokes release the GIL), so on a cold start
    with two cores the detector costs little on top. The model's own errors (missing file,
    metadata or sha256 mismatch) are the ones raised; the detector's come after."""
    with ThreadPoolExecutor(1, thread_name_prefix="detector-load") as pool:
        pre = pool.submit(_preprocessor_for, Path(model_path), num_threads)
        model = Model.load(model_path, num_threads=num_threads)
        preprocessor = pre.result()
    if preprocessor.prep != model.metadata.preprocessing:  # the metadata changed between the reads
        preprocessor = _preprocessor(model)
    return model, preprocessor


def _preprocessor_for(model_path: Path, num_threads: int) -> Preprocessor:
    return Preprocessor.for_model(load_metadata(model_path).preprocessing, model_path.parent, num_threads)


def _fill(pre: Preprocessor, framed: Framed, buf: np.ndarray) -> None:
    pre.to_input(framed, out=buf)


def _fill_mirrored(pre: Preprocessor, framed: Framed, buf: np.ndarray) -> None:
    pre.to_input(framed, out=buf)
    buf[0] = buf[0, :, ::-1].copy()


@functools.lru_cache(maxsize=4)
def _preprocessor(model: Model) -> Preprocessor:
    """One preprocessor (person detector included) per loaded model."""
    return Preprocessor.for_model(model.metadata.preprocessing, model.path.parent, model.num_threads)


@functools.lru_cache(maxsize=8)
def _app(settings: Settings) -> App:
    return App(settings, *_loaded(str(settings.model_path), settings.num_threads))


def get_app(settings: Settings | None = None) -> App:
    """The app for ``settings`` (default: the environment), model loaded once per path.

    Settings are cheap to read, so they are re-read per call: a long-lived process (tests,
    ipython) that changes the environment gets a matching app, while Lambda, whose
    environment never changes, always gets the same cached app and model.
    """
    return _app(settings if settings is not None else load_settings())


def handle_event(event: Any, stats: RequestStats) -> Any:
    """``lambda_function``'s handler body (wrapped by ``observability.instrument``)."""
    return get_app().handle(event, stats)


def predict_bytes(data: bytes | bytearray | memoryview) -> dict[str, float]:
    """Image bytes -> probabilities with the default app (benchmarks, notebooks)."""
    return get_app().classify_bytes(_image_bytes(data))


def _image_bytes(data: object) -> bytes:
    """A path or a PIL image from a notebook gets a TypeError saying what is wanted, not one
    from deep inside the decoder."""
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    if not isinstance(data, bytes):
        raise TypeError(f"predict_bytes takes the image file's bytes, e.g. open(path, 'rb').read(); "
                        f"got {type(data).__name__}")
    return data
