"""The text files each zoo model is installed with: ``model.yaml`` or ``pipeline.yaml``.

The numbers are those of each model's reference pipeline: MediaPipe's face detection and
selfie segmentation graphs (``face_detection_full_range.pbtxt``, ``face_detection_short_range
.pbtxt``, ``selfie_segmentation_cpu.pbtxt``) and rapidocr 3.10's ``config.yaml``; ``fruc``'s
were measured with its script (``frameserve/zoo/scripts/fruc.py``).
"""

from __future__ import annotations

# The MediaPipe models' batching. ``faces`` and ``person-mask`` (the video pipelines' models):
# two OpenVINO streams, each running a batch on its share of the cores, and static-shape copies
# of every batch size (compiled the first time a size comes). Measured on 2 cores against one
# stream on both cores with dynamic shapes: faces 2.5-3.9 -> 2.0 ms of CPU per frame alone
# (batch 1 to 8), video runs 3-12% faster (faces) and 23-32% (person-mask), live streams
# sustained 8 -> 10 (README, video benchmark). ``faces-near`` keeps one stream on both cores,
# the tuner's choice for it.
# No ``precision``: every zoo model runs at the runtime's fastest precision on the CPU (bf16
# where it has bf16 instructions, f32 elsewhere). frameserve quantize's accuracy check
# measured drops of 0.004-0.009 against f32 (README, toolkit benchmark); the consistency
# tests pin f32 where they compare with f32 references.
_DETECTOR_BATCHING = """\
max_batch_size: 8
dynamic_batching: {max_queue_delay_ms: 2}
instances: 1
"""
_VIDEO_BATCHING = """\
max_batch_size: 8
dynamic_batching: {max_queue_delay_ms: 2}
instances: 2
# Warmed up at the batch video runs send: the static-shape copy for 8 compiles while the model
# loads, and none for 1 (a batch video never sends) takes CPU from the first frames
# (240-frame faces run, 8 rounds: 1.34 -> 1.22 s whole process).
warmup: {batch_size: 8}
"""
# Not pinned: on a machine whose cores also decode, an inference thread pinned to a core that
# FFmpeg holds waits instead of moving to the idle one (video benchmark, 4 rounds x 2 clips:
# faces 6-7% faster unpinned, person-mask 2-4%).
_STATIC = "  static_batch_sizes: [1, 2, 3, 4, 5, 6, 7, 8]\n  enable_cpu_pinning: false\n"

FACES = (
    """\
# MediaPipe face detection, full range (sparse): faces at video distances, 192x192.
backend: openvino
"""
    + _VIDEO_BATCHING
    + """\
openvino:
  rewrite_batch_reshapes: true   # the .tflite graph hard-codes batch 1 in its Reshape nodes
"""
    + _STATIC
    + """\
preprocess:
  color: rgb
  # MediaPipe's ImageToTensorCalculator: warp the padded square onto the tensor's corners.
  resize: {mode: letterbox, size: [192, 192], interpolation: linear, sampler: warp}
  scale: 0.00392156862745098     # 1/255
  mean: [0.5, 0.5, 0.5]
  std: [0.5, 0.5, 0.5]           # -> [-1, 1]
  layout: NHWC
  # Normalised inside the graph: frames go to it as uint8 (a quarter of the bytes) and the
  # decoder thread does no float work (video benchmark: 0.07-0.1 ms less CPU a frame).
  fuse: true
postprocess:
  task: ssd_anchors
  boxes: Identity
  scores: Identity_1
  anchors: {input_size: [192, 192], strides: [4], anchor_offset: 0.5}
  num_keypoints: 6
  box_scale: 192
  score_threshold: 0.6
  iou_threshold: 0.3
"""
)
FACES_NEAR = (
    """\
# MediaPipe face detection, short range: close-up faces (within about 2 m), 128x128.
backend: openvino
"""
    + _DETECTOR_BATCHING
    + """\
openvino:
  rewrite_batch_reshapes: true
preprocess:
  color: rgb
  resize: {mode: letterbox, size: [128, 128], interpolation: linear, sampler: warp}
  scale: 0.00392156862745098
  mean: [0.5, 0.5, 0.5]
  std: [0.5, 0.5, 0.5]
  layout: NHWC
postprocess:
  task: ssd_anchors
  boxes: regressors
  scores: classificators
  anchors:
    input_size: [128, 128]
    strides: [8, 16, 16, 16]
    anchor_offset: 0.5
    interpolated_scale_aspect_ratio: 1.0
  num_keypoints: 6
  box_scale: 128
  score_threshold: 0.5
  iou_threshold: 0.3
"""
)
PERSON_MASK = (
    """\
# MediaPipe selfie segmentation (general, 256x256): person foreground probability.
backend: openvino
"""
    + _VIDEO_BATCHING
    + """\
openvino:
  frontend_extensions: [mediapipe]   # converts the custom op Convolution2DTransposeBias
"""
    + _STATIC
    + """\
preprocess:
  color: rgb
  resize: {mode: stretch, size: [256, 256], interpolation: linear, sampler: warp}
  scale: 0.00392156862745098     # -> [0, 1]
  layout: NHWC
postprocess:
  task: segmentation
  output: activation_10
  threshold: 0.5
"""
)
TEXT_DET = """\
# PP-OCRv6 text detection (small), as rapidocr 3.10 runs it.
backend: openvino
max_batch_size: 4
dynamic_batching: {max_queue_delay_ms: 2}
preprocess:
  color: bgr
  resize: {mode: limit_side, limit: 736, limit_type: min, multiple: 32, interpolation: linear}
  scale: 0.00392156862745098
  mean: [0.5, 0.5, 0.5]
  std: [0.5, 0.5, 0.5]
  layout: NCHW
postprocess:
  task: db_text
  output: fetch_name_0
  threshold: 0.3
  box_threshold: 0.5
  max_candidates: 1000
  unclip_ratio: 1.6
  dilation: true
"""

TEXT_CLS = """\
# PP-OCR text line orientation (0 or 180 degrees), mobile v2.0.
backend: openvino
max_batch_size: 6
dynamic_batching: {max_queue_delay_ms: 2}
preprocess:
  color: bgr
  # PP-OCR pads the normalised crop with zeros, on the right.
  resize: {mode: fixed_height, height: 48, width: 192, interpolation: linear, pad_in: tensor}
  scale: 0.00392156862745098
  mean: [0.5, 0.5, 0.5]
  std: [0.5, 0.5, 0.5]
  layout: NCHW
postprocess:
  task: classes
  output: save_infer_model/scale_0.tmp_1
  labels: ["0", "180"]
  top_k: 2
"""

TEXT_REC = """\
# PP-OCRv6 text recognition (small); dict.txt comes from the model's own metadata.
backend: openvino
max_batch_size: 6
dynamic_batching: {max_queue_delay_ms: 2}
preprocess:
  color: bgr
  resize:
    mode: fixed_height
    height: 48
    width: 320
    variable_width: true     # the widest crop of the batch sets the width
    interpolation: linear
    pad_in: tensor           # PP-OCR pads the normalised crops with zeros, on the right
  scale: 0.00392156862745098
  mean: [0.5, 0.5, 0.5]
  std: [0.5, 0.5, 0.5]
  layout: NCHW
postprocess:
  task: ctc
  output: fetch_name_0
  dictionary: dict.txt
"""

OCR = """\
# Text detection -> crop and straighten each region -> orientation -> recognition.
steps:
  - model: text-det
  - crop: {}
  - model: text-cls
    rotate: {label: "180", min_score: 0.9}
  - model: text-rec
output:
  texts: {min_score: 0.5}
"""

FRUC = """\
# Frame-rate up-conversion: the frame half-way between two neighbours, from optical flow
# (OpenCV DIS). Stateless, so pairs from many streams batch together.
backend: python
max_batch_size: 4
dynamic_batching: {max_queue_delay_ms: 2}
inputs:
  - {name: previous, datatype: UINT8, dims: [-1, -1, 3]}   # RGB frames, H x W x 3
  - {name: next, datatype: UINT8, dims: [-1, -1, 3]}       # the same size as previous
outputs:
  - {name: middle, datatype: UINT8, dims: [-1, -1, 3]}
warmup: 0   # model.py's warmup() runs a 640x360 pair; generated inputs would be 1x1 frames
parameters:
  # One core, 1280x720: 0.5 fast ~31 ms a frame; 1.0 fast ~63 ms and 0.5 medium ~64 ms, both
  # about 2 dB closer to the true midpoint.
  flow_scale: 0.5   # the flow is computed on frames scaled by this, in (0, 1]
  preset: fast      # DIS preset: ultrafast, fast or medium
  threads: 1        # OpenCV threads per call (process-wide); raise instances to use more cores
"""

QUALITY = """\
# BRISQUE no-reference quality (frameserve's code, the fitted SVR of brisque==0.2.0).
# Each picture is scored at most 768 pixels on its long side (the LIVE database's pictures,
# which the SVR was fitted on, are 768x512; it also bounds the cost: ~30 ms a 768x432 frame
# on one core); the score is 100 - BRISQUE, clipped to 0..100 (higher is better).
backend: python
max_batch_size: 4
dynamic_batching: {max_queue_delay_ms: 2}
instances: 1   # one batch at a time, its pictures on `threads` threads
inputs:
  - {name: image, datatype: UINT8, dims: [-1, -1, 3]}   # RGB pictures, H x W x 3
outputs:
  - {name: brisque, datatype: FP32, dims: [1]}          # raw BRISQUE (0 best); NaN: flat
warmup: 0   # model.py's warmup() scores a 256x256 picture; generated inputs would be 1x1
preprocess:
  color: rgb
  resize: {mode: limit_side, limit: 768, limit_type: max, interpolation: area}
  dtype: UINT8
  layout: NHWC
postprocess:
  task: quality
  output: brisque
  method: brisque
  best: 0      # raw BRISQUE that scores 100
  worst: 100   # raw BRISQUE that scores 0
  min_side: 32
parameters:
  threads: 2   # pictures of a batch scored at once (each one is its own work: no gain in one)
"""

EXAMPLE_SCRIPT = """\
# Motion regions, per stream: the script engine's example (frameserve/zoo/scripts/motion.py,
# docs/scripts.md). Each stream's frames are compared with that stream's previous frame, with
# that stream's params (jobs, live streams and video run --params give them).
backend: python
max_batch_size: 8
instances: 1   # the state is per stream: a stream's frames must run in order
dynamic_batching: {max_queue_delay_ms: 2}
inputs:
  - {name: image, datatype: UINT8, dims: [144, 256, 3]}
outputs:
  - {name: boxes, datatype: FP32, dims: [8, 4]}    # x1, y1, x2, y2 in input pixels
  - {name: scores, datatype: FP32, dims: [8]}      # 0: an unused row
  - {name: labels, datatype: BYTES, dims: [8]}
preprocess:
  resize: {mode: stretch, size: [256, 144]}
  dtype: UINT8
postprocess:
  task: script_detections
  boxes: boxes
  scores: scores
  labels: labels
warmup: 0   # model.py's warmup() runs one frame
parameters:   # the defaults; a stream's params override them
  threshold: 25     # grey-level change (0..255) that counts as motion
  min_area: 0.002   # the least region, a fraction of the frame
  label: motion     # the label of the boxes
"""

# NudeNet 3.4.2's class names, in its order (``__labels`` in nudenet/nudenet.py; the ONNX
# file's ``names`` metadata agrees).
NUDENET_LABELS = (
    "FEMALE_GENITALIA_COVERED",
    "FACE_FEMALE",
    "BUTTOCKS_EXPOSED",
    "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED",
    "MALE_BREAST_EXPOSED",
    "ANUS_EXPOSED",
    "FEET_EXPOSED",
    "BELLY_COVERED",
    "FEET_COVERED",
    "ARMPITS_COVERED",
    "ARMPITS_EXPOSED",
    "FACE_MALE",
    "BELLY_EXPOSED",
    "MALE_GENITALIA_EXPOSED",
    "ANUS_COVERED",
    "FEMALE_BREAST_COVERED",
    "BUTTOCKS_COVERED",
)

NSFW = """\
# NudeNet 3.4.2's 320n detector (Ultralytics YOLOv8n, 18 labels), as nudenet runs it:
# pad to a square on the right and bottom, 320x320, RGB / 255; boxes above 0.25, one NMS over
# all classes at IoU 0.45 (nudenet's cv2.dnn.NMSBoxes).
backend: openvino
max_batch_size: 8
dynamic_batching: {max_queue_delay_ms: 2}
instances: 1
preprocess:
  color: rgb
  resize: {mode: pad, size: [320, 320], interpolation: linear}
  scale: 0.00392156862745098     # 1/255
  layout: NCHW
postprocess:
  task: yolo
  format: v8                     # output0 [4 + 18, 2100]
  output: output0
  labels: labels.txt
  score_threshold: 0.25
  iou_threshold: 0.45
  class_agnostic: true
  # A frame is unsafe when exposed genitals, breasts, buttocks or anus score 0.5 or more.
  verdict:
    unsafe:
      - FEMALE_GENITALIA_EXPOSED
      - MALE_GENITALIA_EXPOSED
      - FEMALE_BREAST_EXPOSED
      - BUTTOCKS_EXPOSED
      - ANUS_EXPOSED
    min_score: 0.5
"""

ZOO_FILES: dict[str, dict[str, str]] = {
    "faces": {"model.yaml": FACES},
    "faces-near": {"model.yaml": FACES_NEAR},
    "person-mask": {"model.yaml": PERSON_MASK},
    "text-det": {"model.yaml": TEXT_DET},
    "text-cls": {"model.yaml": TEXT_CLS},
    "text-rec": {"model.yaml": TEXT_REC},
    "nsfw": {"model.yaml": NSFW, "labels.txt": "\n".join(NUDENET_LABELS) + "\n"},
    "ocr": {"pipeline.yaml": OCR},
    "fruc": {"model.yaml": FRUC},
    "quality": {"model.yaml": QUALITY},
    "example-script": {"model.yaml": EXAMPLE_SCRIPT},
}
