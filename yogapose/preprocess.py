"""The one preprocessing path: bytes -> upright RGB -> person crop -> model input.

Serving (``app``), training and evaluation (``convert/``) and the bench all call
:class:`Preprocessor`, so a training example and a served request for the same photo are
the same tensor, person crop included. What it does is read from the model metadata
(:class:`~yogapose.metadata.Preprocessing`): with ``person_crop`` set, the person detector
runs on the decoded image and only the person's region is resized for the classifier; with
no person found, or no ``person_crop``, the whole image is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from . import imaging
from .deadline import Deadline
from .metadata import Preprocessing
from .person import PersonBox, PersonDetector


@dataclass(frozen=True)
class Framed:
    """The classifier's view of one photo and where it came from."""

    image: Image.Image  # RGB at the model's input size
    person: PersonBox | None  # None: no person found (or no detector): the whole image
    source_size: tuple[int, int]  # the decoded image's (width, height), for relative boxes

    def person_dict(self) -> dict[str, float] | None:
        return self.person.to_dict(*self.source_size) if self.person is not None else None


class PeopleFinder(Protocol):
    """What :class:`Preprocessor` asks of its detector: :class:`PersonDetector`, or a
    stand-in with the same signature (the bench's, which answers with a box found before)."""

    def find_people(self, img: Image.Image, limit: int = 1,
                    deadline: Deadline | None = None) -> list[PersonBox]: ...


class Preprocessor:
    """Decode, find the person, crop and resize, as the metadata says."""

    def __init__(self, prep: Preprocessing, detector: PeopleFinder | None = None) -> None:
        if prep.person_crop is not None and detector is None:
            raise ValueError("the metadata asks for a person crop but no detector was given")
        self.prep = prep
        self.detector = detector if prep.person_crop is not None else None
        # The working size decoding reduces to (never below; jpeg_draft only says whether
        # libjpeg's DCT scaling may be used for it): it bounds a 40 MP image's memory.
        if prep.person_crop is not None:
            side = max(prep.person_crop.decode_min_side, *prep.size)
            self.draft_size: tuple[int, int] = (side, side)
        else:
            self.draft_size = (int(prep.size[0]), int(prep.size[1]))

    @classmethod
    def for_model(cls, prep: Preprocessing, model_dir: Path | str, num_threads: int = 1) -> Preprocessor:
        """The preprocessor of a model whose detector file sits in ``model_dir``."""
        crop = prep.person_crop
        if crop is None:
            return cls(prep)
        return cls(prep, PersonDetector(Path(model_dir) / crop.detector_file, crop, num_threads))

    def decode(self, data: bytes, max_pixels: int, deadline: Deadline | None = None) -> Image.Image:
        """Untrusted bytes -> upright RGB, at least the working size the crop needs."""
        return imaging.open_image(data, max_pixels=max_pixels, draft_size=self.draft_size,
                                  background=self.prep.alpha_background, deadline=deadline,
                                  jpeg_draft=self.prep.jpeg_draft)

    def frames(self, img: Image.Image, limit: int | None = None,
               deadline: Deadline | None = None) -> list[Framed]:
        """Upright RGB -> the candidate crops at the input size, best first: each person the
        detector offers (up to ``limit``, default the metadata's ``candidates``; the server
        classifies them all and answers for the one most in scope), or the whole image."""
        if self.detector is None:
            return [self.crop(img, None)]
        n = limit if limit is not None else self.candidate_limit
        people = self.detector.find_people(img, n, deadline)
        return [self.crop(img, p) for p in people] or [self.crop(img, None)]

    @property
    def candidate_limit(self) -> int:
        """How many person crops :meth:`frames` offers the classifier at most (serving's)."""
        crop = self.prep.person_crop
        return crop.candidates if crop is not None and self.detector is not None else 1

    def frame(self, img: Image.Image) -> Framed:
        """The detector's pick alone (training: no classifier to choose with yet)."""
        return self.frames(img, 1)[0]

    def crop(self, img: Image.Image, person: PersonBox | None) -> Framed:
        """``img`` framed on ``person`` (the whole image for None) at the input size; training
        calls it with regions of its own (a person carried into a pasted wide shot)."""
        crop = self.prep.person_crop
        if person is None:
            return Framed(imaging.resize_image(img, self.prep), None, img.size)
        if crop is not None and crop.outside == "edge" and person.square is not None:
            return Framed(imaging.resize_square(img, person.square, self.prep), person, img.size)
        region = img.crop((person.left, person.top, person.right, person.bottom))
        return Framed(imaging.resize_image(region, self.prep), person, img.size)

    def from_bytes(self, data: bytes, max_pixels: int) -> Framed:
        return self.frame(self.decode(data, max_pixels))

    def tensor(self, data: bytes, max_pixels: int) -> np.ndarray:
        """The whole preprocessing: bytes -> (1, H, W, 3) float32 model input."""
        return self.to_input(self.from_bytes(data, max_pixels))

    def to_input(self, framed: Framed, out: np.ndarray | None = None) -> np.ndarray:
        """The (1, H, W, 3) float32 input tensor (written into ``out`` when given)."""
        return imaging.to_input_array(framed.image, self.prep, out=out)
