"""Run MediaPipe's own pose pipeline on images; runs INSIDE the side venv (tests/mediapipe/env.py).

    .tools/mediapipe-venv/bin/python tests/mediapipe/worker.py JOB.json OUT.json

JOB.json: ``{"images": ["a.npy", ...]}``, each an RGB uint8 (H, W, 3) array, so both sides
see exactly the same pixels (no second JPEG decoder in the comparison). OUT.json, per image:

* ``detections``: the output of MediaPipe's ``PoseDetectionCpu`` subgraph (its detector,
  anchors, decoding, weighted NMS and letterbox removal: what yogapose.person re-implements),
  each ``{"score", "box": [xmin, ymin, width, height], "keypoints": [[x, y] x 4]}``, relative;
* ``roi``: ``PoseDetectionToRoi`` of the first detection (what the landmark model is run on):
  ``{"x_center", "y_center", "width", "height", "rotation"}``, relative, or null;
* ``landmarks``: ``mediapipe.solutions.pose.Pose(static_image_mode=True, model_complexity=1)``
  landmarks as ``[x_px, y_px, visibility]`` x 33, or null when it finds no pose.

model_complexity=1 because its model, pose_landmark_full.tflite, ships in the wheel; 0 and 2
would be downloaded at run time. Also reports the path and sha256 of the detector file the
wheel's graphs load, so the test can prove it checks the very file MediaPipe runs.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import mediapipe as mp
import numpy as np
from google.protobuf import text_format
from mediapipe.framework import calculator_pb2
from mediapipe.python.solution_base import SolutionBase

# The first stage of pose_landmark_cpu.pbtxt, cut out so its intermediate results are visible.
_DETECTION_GRAPH = """
input_stream: "image"
output_stream: "detections"
output_stream: "roi"
node { calculator: "PoseDetectionCpu" input_stream: "IMAGE:image" output_stream: "DETECTIONS:detections" }
node { calculator: "ImagePropertiesCalculator" input_stream: "IMAGE:image" output_stream: "SIZE:image_size" }
node {
  calculator: "SplitDetectionVectorCalculator"
  input_stream: "detections"
  output_stream: "first_detection"
  options: { [mediapipe.SplitVectorCalculatorOptions.ext] { ranges: { begin: 0 end: 1 } element_only: true } }
}
node {
  calculator: "PoseDetectionToRoi"
  input_stream: "DETECTION:first_detection"
  input_stream: "IMAGE_SIZE:image_size"
  output_stream: "ROI:roi"
}
"""


def _detections(result) -> list[dict]:
    out = []
    for d in result.detections or []:
        loc = d.location_data
        b = loc.relative_bounding_box
        out.append({"score": float(d.score[0]), "box": [b.xmin, b.ymin, b.width, b.height],
                    "keypoints": [[k.x, k.y] for k in loc.relative_keypoints]})
    return out


def main(job_path: str, out_path: str) -> None:
    job = json.loads(Path(job_path).read_text())
    graph = calculator_pb2.CalculatorGraphConfig()
    text_format.Parse(_DETECTION_GRAPH, graph)
    detector = SolutionBase(graph_config=graph, outputs=["detections", "roi"])
    pose = mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1)
    results = []
    for path in job["images"]:
        rgb = np.ascontiguousarray(np.load(path))
        h, w = rgb.shape[:2]
        found = detector.process({"image": rgb})
        roi = found.roi
        marks = pose.process(rgb).pose_landmarks
        results.append({
            "detections": _detections(found),
            "roi": None if roi is None else {"x_center": roi.x_center, "y_center": roi.y_center,
                                             "width": roi.width, "height": roi.height,
                                             "rotation": roi.rotation},
            "landmarks": None if marks is None else [[m.x * w, m.y * h, m.visibility] for m in marks.landmark],
        })
    model = Path(mp.__file__).parent / "modules" / "pose_detection" / "pose_detection.tflite"
    Path(out_path).write_text(json.dumps({
        "mediapipe": mp.__version__,
        "detector_file": str(model),
        "detector_sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
        "results": results,
    }))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
