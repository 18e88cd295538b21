"""Known YOLO-NAS checkpoints: where they come from, their licence, and the local cache.

One small table (`MODELS`) and the one definition of how ``--weights VALUE`` becomes a file
(`resolve_weights`): an existing path as given, else a known model's name (or file name)
from the cache ``$XDG_CACHE_HOME/edgestream/models`` (default ``~/.cache/edgestream/models``),
else the shipped demo model. `pull` downloads into that cache with a progress bar, checks the
sha256 where one is known, and refuses non-commercial weights unless the licence is accepted.

Checksums and sizes are written only where they were measured here; the others say
"unknown" (then `pull` prints the sha256 it computed, to pin a mirror's copy by hand).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

_DEMO_DIR = Path(__file__).resolve().parents[1] / "stages" / "detect" / "models"
_YOLONAS_LICENSE = "https://github.com/Deci-AI/super-gradients/blob/master/LICENSE.YOLONAS.md"
_REFUSED_NOTE = (
    "Deci's download host has moved and refuses these requests "
    "(super-gradients issues #2057, #2064)"
)


@dataclass(frozen=True)
class KnownModel:
    name: str
    arch: str
    filename: str
    description: str
    licence: str
    commercial: bool
    """False: ``pull`` needs ``--accept-license``."""
    url: str | None = None
    sha256: str | None = None
    size_bytes: int | None = None
    shipped: Path | None = None
    """A model that comes with edgestream (no download)."""


def _official(size: str, letter: str) -> KnownModel:
    return KnownModel(
        name=f"yolo_nas_{letter}_coco",
        arch=f"yolo_nas_{letter}",
        filename=f"yolo_nas_{letter}_coco.pth",
        description=f"YOLO-NAS {size}, COCO 80 classes, 640x640 (Deci's official checkpoint)",
        licence=f"YOLO-NAS weights licence, non-commercial use only ({_YOLONAS_LICENSE})",
        commercial=False,
        url=f"https://sghub.deci.ai/models/yolo_nas_{letter}_coco.pth",
    )


MODELS: tuple[KnownModel, ...] = (
    _official("S", "s"),
    _official("M", "m"),
    _official("L", "l"),
    KnownModel(
        name="demo",
        arch="yolo_nas_n",
        filename="demo.pth",
        description="edgestream's demo model: person/car/bicycle, synthetic scenes only",
        licence="Apache-2.0 (edgestream's own, trained from scratch)",
        commercial=True,
        sha256="d2ae5d23c6267d3e8522ffe6108f8325edff09413e7f599d3d20d63ccb330ff3",
        size_bytes=4686654,
        shipped=_DEMO_DIR / "demo.pth",
    ),
)


class PullError(ValueError):
    """A model that could not be pulled, with one line that says why and what to do."""


def models_dir() -> Path:
    """``$XDG_CACHE_HOME/edgestream/models`` (default ``~/.cache/edgestream/models``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgestream" / "models"


def find(name: str) -> KnownModel | None:
    """The known model called ``name`` (or whose file is called ``name``)."""
    for m in MODELS:
        if name in (m.name, m.filename):
            return m
    return None


def local_path(model: KnownModel, cache: Path | None = None) -> Path | None:
    """Where ``model`` is on this machine (shipped, or in the cache), else None."""
    if model.shipped is not None and model.shipped.is_file():
        return model.shipped
    path = (cache or models_dir()) / model.filename
    return path if path.is_file() else None


def _bare_name(value: str) -> bool:
    return bool(value) and "/" not in value and os.sep not in value and not value.startswith("~")


def resolve_weights(value: str | os.PathLike[str], base_dir: Path | None = None) -> Path:
    """What ``--weights VALUE`` (or ``model.weights``) names: the file at VALUE (relative to
    ``base_dir`` when given) when there is one; else, for a bare name, a known model (its
    name or file name) or a file in the models cache; else VALUE unchanged (the caller says
    it is missing). A known model that is not downloaded yet raises `PullError` naming the
    ``edgestream models pull`` command."""
    raw = os.fspath(value)
    path = Path(raw).expanduser()
    if base_dir is not None and not path.is_absolute():
        path = Path(os.path.normpath(Path(base_dir) / path))
    if path.exists() or not _bare_name(raw):
        return path
    cache = models_dir()
    model = find(raw)
    if model is not None:
        found = local_path(model, cache)
        if found is not None:
            return found
        accept = "" if model.commercial else " --accept-license"
        raise PullError(
            f"weights {raw}: not downloaded yet; run `edgestream models pull {model.name}"
            f"{accept}` (or give a file path)"
        )
    for candidate in (cache / raw, *sorted(cache.glob(f"{raw}.*"))):
        if candidate.is_file() and not candidate.name.endswith(".part"):
            return candidate
    return path


def weights_arg(value: str) -> Path:
    """argparse ``type=`` for ``--weights``: `resolve_weights`, its error as a usage error."""
    try:
        return resolve_weights(value)
    except PullError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


# ------------------------------------------------------------------------------------------
# Pull
# ------------------------------------------------------------------------------------------


def _refused(url: str, why: str) -> PullError:
    official = any(m.url == url for m in MODELS)
    note = f" ({_REFUSED_NOTE})" if official else ""
    return PullError(
        f"download refused: {why} for {url}{note}; give --url with a mirror you trust or a "
        "copy you already have, e.g. --url file:///path/to/the.pth"
    )


def _fmt_size(n: int | None) -> str:
    if n is None:
        return "unknown"
    return f"{n / 1e6:.1f} MB"


def pull(
    name: str,
    url: str | None = None,
    accept_license: bool = False,
    cache: Path | None = None,
    progress: bool = True,
    timeout_s: float = 30.0,
) -> Path:
    """Download the known model ``name`` (from ``url`` when given: a mirror, or ``file://``)
    into the cache and return its path. Refused (`PullError`, nothing cached) when the licence
    is non-commercial and not accepted, when the host refuses or cannot be reached, and when
    a known sha256 does not match."""
    model = find(name)
    if model is None:
        known = ", ".join(m.name for m in MODELS)
        raise PullError(f"unknown model {name!r}; known: {known} (`edgestream models` lists them)")
    if not model.commercial and not accept_license:
        raise PullError(
            f"{model.name} is licensed for non-commercial use only: {model.licence}; "
            "read it, then pull again with --accept-license"
        )
    cache = cache or models_dir()
    if model.shipped is not None and url is None:
        if model.shipped.is_file():
            return model.shipped
        raise PullError(f"{model.name} ships with edgestream but {model.shipped} is missing")
    source = url or model.url
    if source is None:
        raise PullError(f"{model.name}: no download address known; give --url")
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / model.filename
    part = target.with_name(target.name + ".part")
    digest = hashlib.sha256()
    try:
        request = urllib.request.Request(source, headers={"User-Agent": "edgestream"})
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else model.size_bytes
            from tqdm import tqdm

            with (
                part.open("wb") as out,
                tqdm(
                    total=total,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=model.filename,
                    disable=not progress,
                ) as bar,
            ):
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as e:
        part.unlink(missing_ok=True)
        raise _refused(source, f"HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        part.unlink(missing_ok=True)
        reason = e.reason.strerror if isinstance(e.reason, OSError) else e.reason
        raise _refused(source, f"could not reach the host ({reason or e.reason})") from None
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    got = digest.hexdigest()
    if model.sha256 is not None and got != model.sha256:
        part.unlink(missing_ok=True)
        raise PullError(
            f"checksum mismatch for {source}: sha256 {got}, expected {model.sha256}; "
            "nothing was cached (a different or damaged file)"
        )
    shutil.move(str(part), target)
    return target


# ------------------------------------------------------------------------------------------
# CLI: `edgestream models [pull NAME]`
# ------------------------------------------------------------------------------------------


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "models",
        help="list known YOLO-NAS checkpoints; `models pull NAME` downloads one",
        description="Known YOLO-NAS checkpoints with licence, size and sha256, and where each "
        f"is on this machine. Downloads are cached in {models_dir()} ($XDG_CACHE_HOME); "
        "`--weights NAME` in run/detect then finds them by name.",
    )
    p.set_defaults(func=cmd_models)
    msub = p.add_subparsers(dest="models_command", metavar="ACTION")
    pp = msub.add_parser(
        "pull",
        help="download a known checkpoint into the cache",
        description="Download NAME with a progress bar, check its sha256 where known, and "
        "cache it. Non-commercial weights need --accept-license.",
    )
    pp.add_argument("name", help="a name from `edgestream models`")
    pp.add_argument("--url", help="download from here instead (a mirror, or file:///path)")
    pp.add_argument(
        "--accept-license",
        action="store_true",
        help="accept the model's licence (required for non-commercial weights)",
    )
    pp.set_defaults(func=cmd_pull)


def cmd_models(args: argparse.Namespace) -> int:
    cache = models_dir()
    print(f"{'NAME':<16} {'ARCH':<11} {'SIZE':>9}  {'HERE':<5} SHA256 / LICENCE")
    for m in MODELS:
        here = local_path(m, cache)
        print(
            f"{m.name:<16} {m.arch:<11} {_fmt_size(m.size_bytes):>9}  "
            f"{'yes' if here else 'no':<5} {m.sha256 or 'unknown'}"
        )
        print(f"{'':<16} {m.description}")
        print(f"{'':<16} licence: {m.licence}")
        if here:
            print(f"{'':<16} file: {here}")
    print(f"\ncache: {cache}; pull one with `edgestream models pull NAME [--accept-license]`")
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    model = find(args.name)
    if model is not None and not model.commercial and args.accept_license:
        print(f"{model.name}: licence accepted: {model.licence}")
    path = pull(args.name, url=args.url, accept_license=args.accept_license)
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    checked = "checked" if model is not None and model.sha256 else "not checked: none known"
    print(f"{path} (sha256 {digest.hexdigest()}, {checked}); use it with --weights {args.name}")
    return 0
