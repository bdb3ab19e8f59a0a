"""Turn the bench's raw results into Markdown tables (printed, and written to bench/REPORT.md).

Ratios are ``reference / ours`` for times (``x3.0`` = three times faster than the
reference stack at the same thread count) and ``ours / reference`` nowhere else, so every
ratio reads "how many times better". The hand-written part of REPORT.md (everything after
``NOTES_MARKER``) survives a rewrite.
"""

from __future__ import annotations

from pathlib import Path

NOTES_MARKER = "<!-- hand-written notes below this line are kept when `python -m bench` rewrites the report -->"
IMAGE_LABELS = {
    "photo-300.jpg": "300 px JPEG",
    "phone-12mp.jpg": "12 MP JPEG, EXIF 6",
    "alpha.png": "PNG + alpha",
}
# AWS Lambda list prices (us-east-1), as published in 2025; check before relying on them.
PRICE_X86_GBS = 0.0000166667
PRICE_ARM_GBS = 0.0000133334
PRICE_REQUEST = 0.20 / 1e6
FULL_VCPU_MB = 1769
TARGETS = {"e2e_12mp": 3.0, "e2e_300": 2.0, "cold_s": 1.0, "rss_mb": 250.0, "acc_points": 0.5}


def _f(x, nd: int = 1, unit: str = "") -> str:
    if x is None:
        return "–"
    try:
        return f"{x:,.{nd}f}{unit}"
    except (TypeError, ValueError):
        return str(x)


def _mp(s: dict | None, nd: int = 1) -> str:
    """'median / p95' of a summary in ms."""
    if not s or "median_ms" not in s:
        return "–"
    return f"{s['median_ms']:.{nd}f} / {s['p95_ms']:.{nd}f}"


def _ratio(ref: float | None, ours: float | None) -> str:
    if not ref or not ours:
        return "–"
    return f"x{ref / ours:.2f}"


def _label(c: dict) -> str:
    if c.get("task_root"):
        return "ours (LiteRT), app code without .pyc (as the image ships it)"
    if c.get("env"):
        return "ours (LiteRT), with " + ", ".join(f"{k}={v}" for k, v in c["env"].items())
    return {"ours": "ours (LiteRT)", "reference": "reference (tflite-runtime 2.14)",
            "keras": "Keras model(x)"}[c["stack"]]


def _ok(c: dict, part: str) -> bool:
    return isinstance(c.get(part), dict) and "error" not in c[part]


def _ref_for(configs: list[dict], threads: int) -> dict | None:
    return next((c for c in configs if c["stack"] == "reference" and c["threads"] == threads), None)


def _img(c: dict | None, name: str, path: str = "handler_b64") -> dict | None:
    if not c or not _ok(c, "warm"):
        return None
    return c["warm"]["images"].get(name, {}).get(path)


def _med(s: dict | None) -> float | None:
    return s.get("median_ms") if s else None


def _cold_s(c: dict | None) -> float | None:
    if not c or not _ok(c, "cold"):
        return None
    return c["cold"]["median_ms"] / 1000


def _rss(c: dict | None) -> float | None:
    if not c or not _ok(c, "warm"):
        return None
    r = c["warm"]["rss"]
    return r.get("vmhwm_mb") or r.get("ru_maxrss_mb")


def headline(results: dict) -> dict | None:
    """The configuration Lambda runs by default: shipped variant, 1 thread (or the first)."""
    cs = [c for c in results["configs"] if c["stack"] == "ours" and not c.get("cold_only")
          and c["variant"] == results["meta"]["shipped_variant"]]
    return next((c for c in cs if c["threads"] == 1), cs[0] if cs else None)


def targets(results: dict) -> list[tuple[str, str, str, str]]:
    """-> rows (target, measured, threshold, verdict)."""
    h = headline(results)
    if h is None:
        return []
    ref = _ref_for(results["configs"], h["threads"])
    rows = []

    def verdict(ok: bool | None) -> str:
        return "–" if ok is None else ("met" if ok else "NOT met")

    for name, key, need in (("phone-12mp.jpg", "e2e_12mp", TARGETS["e2e_12mp"]),
                            ("photo-300.jpg", "e2e_300", TARGETS["e2e_300"])):
        o, r = _med(_img(h, name)), _med(_img(ref, name))
        sp = (r / o) if (o and r) else None
        rows.append((f"warm e2e {IMAGE_LABELS[name]} vs reference", _f(sp, 2, "x") if sp else "–",
                     f">= {need:.0f}x", verdict(None if sp is None else sp >= need)))
    oc, rc = _cold_s(h), _cold_s(ref)
    rows.append(("cold start to first answer", _f(oc, 2, " s"), f"<= {TARGETS['cold_s']:.1f} s",
                 verdict(None if oc is None else oc <= TARGETS["cold_s"])))
    rows.append(("cold start faster than reference", f"{_f(oc, 2)} vs {_f(rc, 2)} s", "ours < ref",
                 verdict(None if (oc is None or rc is None) else oc < rc)))
    rss = _rss(h)
    rows.append(("peak RSS while serving", _f(rss, 0, " MB"), f"<= {TARGETS['rss_mb']:.0f} MB",
                 verdict(None if rss is None else rss <= TARGETS["rss_mb"])))
    acc = results.get("accuracy") or {}
    v = results["meta"]["shipped_variant"]
    if v in acc and "float32" in acc and "real_accuracy" in acc[v]:
        d = (acc["float32"]["real_accuracy"] - acc[v]["real_accuracy"]) * 100
        rows.append((f"accuracy of {v} vs float32 (val, real photos)", f"{-d:+.2f} points",
                     f"within {TARGETS['acc_points']} point", verdict(d <= TARGETS["acc_points"])))
    else:
        rows.append(("accuracy of shipped variant vs float32", "no build/variants.json", "within 0.5 point", "–"))
    return rows


def floor_note(configs: list[dict], variant: str, names) -> list[str]:
    """Per JPEG and thread count: the time no request path can go below with this model and
    decoder (libjpeg-turbo's draft decode alone + inference alone) next to the target budget."""
    out = []
    for c in configs:
        if c["stack"] != "ours" or c["variant"] != variant or c.get("cold_only") or not _ok(c, "warm"):
            continue
        ref = _ref_for(configs, c["threads"])
        for n in names:
            st = (c["warm"].get("stages") or {}).get(n) or {}
            dec, inf = _med(st.get("jpeg_draft_decode")), _med(c["warm"].get("infer"))
            r = _med(_img(ref, n))
            need = TARGETS["e2e_12mp"] if n == "phone-12mp.jpg" else TARGETS["e2e_300"]
            if dec is None or inf is None or not r:
                continue
            floor = dec + inf
            out.append(f"- {IMAGE_LABELS[n]}, {c['threads']} thread{'s' if c['threads'] > 1 else ''}: draft decode "
                       f"alone {dec:.1f} ms + inference alone {inf:.1f} ms = **{floor:.1f} ms**, so at most "
                       f"x{r / floor:.2f} vs the reference's {r:.1f} ms; x{need:.0f} needs <= {r / need:.1f} ms"
                       + (" (out of reach for this model on this CPU)" if floor > r / need else "") + ".")
    if out:
        head = (f"Floor for `{variant}`: what is left with every other step of the request removed "
                "(libjpeg-turbo's entropy decode of all coefficients at the draft scale, single-threaded, and the "
                "interpreter's invoke):")
        out = [head, "", *out, ""]
    return out


def lambda_sizing(results: dict) -> list[str]:
    h = headline(results)
    if h is None or not _ok(h, "warm"):
        return ["(no figures for the shipped configuration)"]
    t2 = next((c for c in results["configs"] if c["stack"] == "ours" and c["variant"] == h["variant"]
               and c["threads"] == 2 and _ok(c, "warm")), None)
    d300, d12 = _med(_img(h, "photo-300.jpg")), _med(_img(h, "phone-12mp.jpg"))
    rows = []
    for mem, thr, scale, src in ((1024, 1, FULL_VCPU_MB / 1024, h), (FULL_VCPU_MB, 1, 1.0, h),
                                 (2 * FULL_VCPU_MB, 2, 1.0, t2)):
        if src is None:
            continue
        a = _med(_img(src, "photo-300.jpg"))
        b = _med(_img(src, "phone-12mp.jpg"))
        if a is None or b is None:
            continue
        a, b = a * scale, b * scale
        gb = mem / 1024

        def per_m(ms: float, price: float, gb: float = gb) -> float:
            return 1e6 * gb * (int(ms) + 1) / 1000 * price + 1e6 * PRICE_REQUEST

        rows.append(f"| {mem} MB | {mem / FULL_VCPU_MB:.2f} | {thr} | {a:.0f} | {b:.0f} | "
                    f"${per_m(a, PRICE_X86_GBS):.2f} | ${per_m(b, PRICE_X86_GBS):.2f} | "
                    f"${per_m(a, PRICE_ARM_GBS):.2f} |")
    cold = _cold_s(h)
    init_cost = cold * (FULL_VCPU_MB / 1024) * PRICE_X86_GBS if cold else None
    out = [
        (f"Prices assumed (AWS list prices, us-east-1, as of 2025; re-check): x86 ${PRICE_X86_GBS:.10f} per GB-s, "
        f"arm64 ${PRICE_ARM_GBS:.10f} per GB-s, $0.20 per 1M requests; duration billed per 1 ms. "
        f"Lambda gives one full vCPU at {FULL_VCPU_MB} MB and a proportional share below; latencies "
        "below that size are the 1-thread figures scaled by the CPU share (compute-bound work). "
        "arm64 costs use the x86 timings (not measured here: Graviton speed differs)."),
        "",
        "| memory | vCPU | NUM_THREADS | e2e 300 px (ms) | e2e 12 MP (ms) | x86 $/1M (300 px) | x86 $/1M (12 MP) | arm64 $/1M (300 px) |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]
    if d300 and d12:
        out.append(
            f"Recommendation: **{FULL_VCPU_MB} MB, NUM_THREADS=1**. Below one vCPU the compute cost per request "
            "stays about the same (less memory, proportionally longer) while latency grows; above it a single "
            "thread gets no faster, and two threads only pay if their speed-up beats the doubled price "
            "(compare the rows). Peak RSS is far below any of these sizes, so CPU, not memory, sets the size."
        )
        if init_cost:
            out.append(f"A cold start (~{cold:.2f} s of init + first answer at {FULL_VCPU_MB} MB) costs about "
                       f"${init_cost * 1e6:.2f} per million cold starts in init duration (container images bill init).")
    return out


def render(results: dict) -> str:
    meta, mach, configs = results["meta"], results["machine"], results["configs"]
    L: list[str] = []
    L.append("# Benchmark: cold start, latency, memory — this project vs the reference stack")
    L.append("")
    L.append(f"Command: `python -m bench{' --quick' if meta['quick'] else ''}` (repo root, project venv). "
             f"Run {mach['date_utc']} at git {mach['git']}, took {meta.get('duration_s', 0):.0f} s. "
             "The machine is shared and noisy: absolute times are indicative, ratios measured in the same run "
             "are the figures to read.")
    L.append("")
    for n in meta["notes"]:
        L.append(f"> **Note:** {n}")
        L.append("")
    if meta["missing"]:
        L.append("Missing inputs: " + ", ".join(f"`{m}`" for m in meta["missing"]))
        L.append("")

    L += ["## Machine", "",
          "| | |", "|---|---|",
          f"| CPU | {mach['cpu']} ({mach['simd']}) |",
          f"| cores / memory | {mach['cores']} / {_f(mach['mem_gb'], 1)} GiB, kernel {mach['kernel']} |",
          f"| load average at start | {' '.join(f'{x:.2f}' for x in mach['loadavg_start'])} |",
          "| ours | Python {python}, ai-edge-litert {ai-edge-litert}, numpy {numpy}, Pillow {pillow}, "
          "Powertools {aws-lambda-powertools}, pybase64 {pybase64} |".format(**{k: mach["ours"].get(k) for k in (
              "python", "ai-edge-litert", "numpy", "pillow", "aws-lambda-powertools", "pybase64")}),
          ]
    if mach["ref"]:
        L.append("| reference | Python {python}, tflite-runtime {tflite-runtime}, numpy {numpy}, Pillow {pillow}, "
                 "keras-image-helper {keras-image-helper} |".format(**{k: mach["ref"].get(k) for k in
                                                                       ("python", "tflite-runtime", "numpy", "pillow", "keras-image-helper")}))
    if mach["keras"]:
        k = mach["keras"]
        L.append(f"| Keras | Python {k.get('python')}, TensorFlow {k.get('tensorflow-cpu') or k.get('tensorflow')}, "
                 f"Keras {k.get('keras')}, numpy {k.get('numpy')} |")
    L.append(f"| reference stack | {meta['ref_status']} |")
    L.append(f"| Keras row | {meta['keras_status']} |")
    L.append("")

    # Targets
    tr = targets(results)
    if tr:
        h = headline(results)
        L += [f"## Targets (shipped variant `{h['variant']}`, NUM_THREADS={h['threads']}, vs reference at the same threads)", "",
              "| target | measured | needed | verdict |", "|---|---|---|---|"]
        L += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in tr]
        L.append("")

    # Cold start
    L += ["## Cold start (fresh process -> first answer, 300 px JPEG)", "",
          ("Wall time from spawning the interpreter to reading the answer line: Python start-up, imports, "
          "model load, warm-up (ours does one at init), first request. Median / p95 over the runs; "
          "one discarded run first fills the page cache and `__pycache__`."), "",
          "| stack | model | threads | cold start ms (median / p95) | n | import + load ms | first answer ms | RSS after answer MB | vs reference |",
          "|---|---|---|---|---|---|---|---|---|"]
    for c in configs:
        if not _ok(c, "cold"):
            L.append(f"| {_label(c)} | {c['variant']} | {c['threads']} | error: {c.get('cold', {}).get('error', '?')[:120]} | | | | | |")
            continue
        cd = c["cold"]
        ref = _ref_for(configs, c["threads"])
        rr = ref["cold"]["median_ms"] if ref and _ok(ref, "cold") else None
        L.append(f"| {_label(c)}{' (shim)' if cd.get('kind') == 'shim' else ''} | {c['variant']} | {c['threads']} | "
                 f"{_mp(cd, 0)} | {cd['n']} | {cd['import_ms']:.0f} | {cd['first_call_ms']:.0f} | {cd['rss_mb']:.0f} | "
                 f"{'' if c['stack'] == 'reference' else _ratio(rr, cd['median_ms'])} |")
    L.append("")

    ip = results.get("initparts") or {}
    if ip:
        cols = [k for k in ip if "error" not in ip[k]]
        parts: list[str] = []
        for k in cols:
            parts += [n for n in ip[k] if n not in parts]
        L += ["### Cold-start anatomy (median ms per step, fresh processes, 1st thread count)", "",
              ("Each step of init timed on its own in a fresh interpreter (Python start-up itself is ~15 ms). "
              "Ours imports what `lambda_function` imports and does what `Model.load` does; the reference's "
              "first invoke happens inside its first request; the second invoke is one steady-state inference."), "",
              "| step | " + " | ".join(f"`{k}`" for k in cols) + " |", "|---|" + "---|" * len(cols)]
        for n in parts:
            L.append(f"| {n} | " + " | ".join(_f(ip[k].get(n), 0) for k in cols) + " |")
        L.append("| **sum, without the second invoke** | " + " | ".join(
            # "(...)" rows are facts or work done in parallel with other rows, not extra time.
            f"**{sum(v for n, v in ip[k].items() if not n.startswith('(') and n != 'second invoke'):.0f}**"
            for k in cols) + " |")
        for k in ip:
            if "error" in ip[k]:
                L.append(f"\n`{k}`: {ip[k]['error']}")
        L.append("")

    # Warm e2e
    names = list(IMAGE_LABELS)
    for path, title, expl in (
        ("handler_b64", "Warm end-to-end latency: handler, direct `{\"image\": <base64>}` event",
         ("The whole request in-process: base64 decode, image decode (+EXIF, alpha), resize, tensor, "
         "inference, response. Reference: the original code path fed the same bytes (b64decode -> "
         "`Image.open(BytesIO)` -> `convert_to_tensor` -> invoke).")),
        ("app_bytes", "Warm end-to-end latency: bytes in, probabilities out (no base64)",
         "Ours: the app-level bytes function; reference: the same code minus base64."),
    ):
        L += [f"## {title}", "", expl + " Milliseconds, median / p95; `xN` = N times faster than the reference "
              "at the same thread count.", "",
              "| stack | model | threads | " + " | ".join(f"{IMAGE_LABELS[n]}" for n in names) + " |",
              "|---|---|---|" + "---|" * len(names)]
        any_row = False
        for c in configs:
            if c.get("cold_only"):
                continue
            if not _ok(c, "warm"):
                L.append(f"| {_label(c)} | {c['variant']} | {c['threads']} | error: {c.get('warm', {}).get('error', '?')[:150]} |" + " |" * (len(names) - 1))
                continue
            ref = _ref_for(configs, c["threads"])
            cells = []
            for n in names:
                s = _img(c, n, path)
                if s is None:
                    cells.append("–")
                    continue
                any_row = True
                r = _med(_img(ref, n, path))
                cells.append(_mp(s) + ("" if c["stack"] == "reference" else f" ({_ratio(r, s['median_ms'])})"))
            L.append(f"| {_label(c)} | {c['variant']} | {c['threads']} | " + " | ".join(cells) + " |")
        if path == "app_bytes":
            entries = {c["warm"].get("bytes_entry") for c in configs if c["stack"] == "ours" and _ok(c, "warm")}
            L.append("")
            L.append(f"Ours, bytes entry point used: {', '.join(sorted(str(e) for e in entries))}."
                     if any_row else "No app-level bytes function found in our stack.")
        L.append("")

    # Stage breakdown
    h = headline(results)
    if h is not None:
        ref = _ref_for(configs, h["threads"])
        rows = []
        for n in names:
            for c in (h, ref):
                if not c or not _ok(c, "warm") or n not in (c["warm"].get("stages") or {}):
                    continue
                st = c["warm"]["stages"][n]
                parts = [_med(st.get("base64")), _med(st.get("decode_resize")), _med(st.get("to_tensor")),
                         _med(c["warm"].get("infer"))]
                total = sum(p for p in parts if p is not None)
                rows.append(f"| {IMAGE_LABELS[n]} | {_label(c)} {c['variant']} | " +
                            " | ".join(_f(p, 1) for p in parts) +
                            f" | {total:.1f} | {_f(_med(_img(c, n)), 1)} |")
        if rows:
            L += [f"## Where the time goes ({h['threads']} thread{'s' if h['threads'] > 1 else ''}, medians in ms)", "",
                  ("Each stage timed alone in the warm worker. Ours: `yogapose.b64.decode_payload`, "
                  "`imaging.load_resized` (draft decode, EXIF, alpha, resize), `imaging.to_input_array`; reference: "
                  "`base64.b64decode`, `Image.open` + `resize_image` (full decode, NEAREST), array + scaling."), "",
                  "| image | stack | base64 | decode + resize | to tensor | inference | sum | measured e2e |",
                  "|---|---|---|---|---|---|---|---|", *rows, ""]
            L += floor_note(configs, h["variant"], names)

    # Answers sanity
    answers = []
    for c in configs:
        if _ok(c, "warm"):
            a = {n: (c["warm"]["images"][n].get("answer") or ["?"])[0] for n in names if n in c["warm"]["images"]}
            answers.append(f"{c['id']}: " + ", ".join(f"{IMAGE_LABELS[n]}={a[n]}" for n in a))
    if answers:
        L += [("<details><summary>Top class per stack and image (sanity check; the reference ignores EXIF "
              "rotation and uses nearest-neighbour resizing, so it may disagree)</summary>"), ""]
        L += [f"- {a}" for a in answers]
        L += ["", "</details>", ""]

    # Inference + physical limit
    peak = results.get("peak", {})
    L += ["## Inference only, and the physical limit", ""]
    models = results.get("models", {})
    fl = [f"`{v}` {m['flops']['flops'] / 1e9:.2f} GFLOP ({m['flops']['macs'] / 1e9:.2f} GMAC, {m['flops']['ops']} ops)"
          for v, m in models.items() if "flops" in m]
    L.append("Work per inference, counted from the flatbuffer's ops and shapes (2 FLOPs per MAC; int8 "
             "variants: the same count in integer ops): " + "; ".join(fl) + ".")
    L.append("")
    pk = []
    for t in results["meta"]["threads"]:
        p = peak.get(str(t), {})
        if "gflops_best" in p:
            kern = ", ".join(f"{b['internal_api']} {b['version']} kernel {b['architecture']}" for b in (p.get("blas") or [])) or "kernel unknown (no threadpoolctl)"
            pk.append(f"{t} thread{'s' if t > 1 else ''}: **{p['gflops_best']:.0f} GFLOP/s** best, {p['gflops_median']:.0f} median ({kern})")
    env_had = {k: v for k, v in (peak.get("env_had") or {}).items() if v}
    L.append("CPU peak, numpy float32 matmul 2048x2048 (OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE unset in that "
             f"subprocess{'; the environment had ' + str(env_had) if env_had else '; neither was set'}): "
             + "; ".join(pk) + ".")
    L.append("")
    L += ["| stack | model | threads | inference ms (median / p95) | achieved GFLOP/s | % of matmul peak | vs reference |",
          "|---|---|---|---|---|---|---|"]
    for c in configs:
        if not _ok(c, "warm") or "infer" not in c["warm"]:
            continue
        s = c["warm"]["infer"]
        m = models.get(c["variant"]) if c["stack"] == "ours" else models.get("float32")
        gflop = m["flops"]["flops"] / 1e9 if m and "flops" in m else None
        rate = gflop / (s["median_ms"] / 1000) if gflop else None
        pb = peak.get(str(c["threads"]), {}).get("gflops_best")
        ref = _ref_for(configs, c["threads"])
        rr = ref["warm"]["infer"]["median_ms"] if ref and _ok(ref, "warm") and "infer" in ref["warm"] else None
        L.append(f"| {_label(c)} | {c['variant']} | {c['threads']} | {_mp(s)} | {_f(rate, 1)} | "
                 f"{_f(100 * rate / pb if rate and pb else None, 0, '%')} | "
                 f"{'' if c['stack'] == 'reference' else _ratio(rr, s['median_ms'])} |")
    L.append("")

    # Memory & size
    deps = results.get("deps", {})

    def dep(key: str) -> str:
        d = deps.get(key, {})
        if "total_mb" not in d:
            return "–"
        return f"{d['total_mb']:.0f} MB ({', '.join(f'{n} {v['mb']:.0f}' for n, v in d['dists'].items() if v['mb'] >= 1)})"

    L += ["## Memory and size", "",
          "| stack | model | threads | peak RSS serving MB (VmHWM) | model file MB |", "|---|---|---|---|---|"]
    for c in configs:
        if not _ok(c, "warm"):
            continue
        mf = models.get(c["variant"], {}).get("mb") if c["stack"] != "keras" else Path(c["model"]).stat().st_size / 1e6 if Path(c["model"]).exists() else None
        L.append(f"| {_label(c)} | {c['variant']} | {c['threads']} | {_f(_rss(c), 0)} | {_f(mf, 1)} |")
    L += ["", ("Peak RSS is the worker process's high-water mark after serving all three images "
          "(the 12 MP decode included), before the separate inference-only interpreter is built."), "",
          "Runtime dependencies (installed size of the packages and everything they require):", "",
          f"- ours, ai-edge-litert + numpy + Pillow: {dep('ours_core')}",
          f"- ours, + aws-lambda-powertools + pybase64: {dep('ours_runtime')}",
          f"- ours, whole Pipfile [packages] (what the image installs; + boto3): {dep('ours_pipfile')}",
          f"- reference, tflite-runtime + numpy + Pillow + keras-image-helper: {dep('ref')}", ""]

    acc = results.get("accuracy") or {}
    if acc:
        base = (acc.get("float32") or {}).get("real_accuracy")
        L += ["## Variants: size and accuracy (validation, real photos; from the conversion's variants.json)", "",
              "| variant | file MB | accuracy | vs float32 (points) | note |", "|---|---|---|---|---|"]
        for v, r in acc.items():
            a = r.get("real_accuracy")
            d = f"{(a - base) * 100:+.2f}" if (a is not None and base is not None) else "–"
            note = r.get("refused") or r.get("note") or ""
            L.append(f"| {v} | {_f(r.get('bytes', 0) / 1e6 if r.get('bytes') else None, 1)} | {_f(a, 4)} | {d} | {note} |")
        L.append("")

    rv = results.get("ref_variants")
    if rv:
        L += ["## Can the reference runtime (tflite-runtime 2.14) load each variant?", "",
              "| variant | loads | inference ms, 1 thread (median / p95) | note |", "|---|---|---|---|"]
        if "error" in rv:
            L.append(f"| – | – | – | {rv['error']} |")
        else:
            by_path = {m["path"]: v for v, m in models.items()}
            for p, r in rv.items():
                note = r.get("error", "")
                L.append(f"| {by_path.get(p, p)} | {'yes' if r.get('loads') else 'no'} | "
                         f"{_mp(r.get('infer'))} | {note} |")
            L += ["", ("Where a variant does not load, the reference rows above compare against the float32 "
                  "conversion of the same weights (the reference stack's own configuration).")]
        L.append("")

    fe = results.get("fetch")
    if fe:
        L += ["## Fetching (loopback HTTP server, separate from the figures above)", "",
              ("Download only: ours = `yogapose.fetch.fetch` (SSRF guard, DNS pinning, size cap, deadline), "
              "reference = keras-image-helper's `download_image` (`urllib.request.urlopen(url).read()` + "
              "`Image.open`). Milliseconds, median / p95."), "",
              "| image | bytes | ours | reference | vs reference |", "|---|---|---|---|---|"]
        for n, size in fe["sizes"].items():
            o = fe["ours"].get(n) if "error" not in fe["ours"] else None
            r = fe["ref"].get(n) if "error" not in fe["ref"] else None
            L.append(f"| {IMAGE_LABELS[n]} | {size:,} | {_mp(o, 2) if o else fe['ours'].get('error', '–')} | "
                     f"{_mp(r, 2) if r else fe['ref'].get('error', '–')} | {_ratio(_med(r), _med(o))} |")
        L.append("")

    it = results.get("importtime")
    if it:
        L += ["## Import profile (`python -X importtime -c \"import lambda_function\"`)", ""]
        if it.get("error"):
            L.append(f"Failed: {it['error']}")
        else:
            L.append(f"Target `{it['target']}`: {it['n_modules']} modules, {it['total_import_ms']:.0f} ms cumulative "
                     f"(model load and warm-up run inside the import), {it['wall_ms']:.0f} ms wall for the process.")
            L.append("")
            L += ["| top-level import | cumulative ms |", "|---|---|"]
            L += [f"| `{r['name']}` | {r['cum_us'] / 1000:.1f} |" for r in it["top"][:8]]
            L += ["", "Self time by package: " + ", ".join(
                f"`{k}` {v:.0f} ms" for k, v in (it.get("by_package_ms") or {}).items()) + "."]
            L += ["", "Largest self times (depth <= 2): " + ", ".join(
                f"`{r['name']}` {r['self_us'] / 1000:.1f} ms" for r in it["top_nested"][:8]) + ".",
                "", "Heavy packages imported at init: " + (", ".join(f"`{m}`" for m in it["heavy_modules"]) or "none") + "."]
        L.append("")

    L += ["## Lambda sizing", ""] + lambda_sizing(results) + [""]
    return "\n".join(L)


def write_report(path: Path, generated: str) -> None:
    """Write the generated part, keeping any hand-written notes of the existing file."""
    notes = ""
    if path.exists():
        old = path.read_text(encoding="utf-8")
        if NOTES_MARKER in old:
            notes = old.split(NOTES_MARKER, 1)[1]
    path.write_text(generated.rstrip() + "\n\n" + NOTES_MARKER + (notes if notes else "\n"), encoding="utf-8")
