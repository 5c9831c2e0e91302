#!/usr/bin/env python3
"""An `edgecam process` worker: counts people in each frame with OpenCV's built-in HOG
people detector (no model to download; `pip install opencv-python-headless<5`).

The protocol (see the README, "Run a model on every frame"): for each frame edgecam writes
one JSON line ({"headers": {...}, "topic", "partition", "offset", "length": N}) and then
the N bytes of the image to stdin; the worker answers one JSON object on one line on stdout.
Logs go to stderr.
"""
import json
import sys

import cv2
import numpy as np

hog = cv2.HOGDescriptor()
hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())

frames, answers = sys.stdin.buffer, sys.stdout
for line in frames:
    meta = json.loads(line)
    data = frames.read(meta["length"])
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    boxes, _ = hog.detectMultiScale(image, winStride=(8, 8), padding=(8, 8), scale=1.05)
    answers.write(json.dumps({"people": len(boxes), "boxes": [[int(v) for v in b] for b in boxes]}) + "\n")
    answers.flush()
