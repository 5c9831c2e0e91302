#!/usr/bin/env python3
"""The Python pipeline edgecam replaces, written carefully, as the baseline of
scripts/compare-python.

Reads an MJPEG file (frames cut at the JPEG SOI/EOI markers, streamed in 1 MB chunks, never
the whole file in memory), and for each frame either publishes it untouched (--passthrough)
or decodes it with Pillow and encodes it again as JPEG (4:2:0, libjpeg-turbo under Pillow)
at --quality, stepping the quality down by 5 until the frame fits --budget bytes, starting
from the quality that fitted last (so one encode per frame in the steady state, as edgecam
does). Each frame is produced with confluent-kafka (librdkafka) under the same producer
settings as edgecam: idempotence on, acks=all, linger.ms=5, with the same headers.

Exits 0 after every frame's delivery report was a success; 1 otherwise.

Usage: python_pipeline.py --bootstrap HOST:PORT --topic T --mjpeg FILE --frames N
                          [--loop] [--quality Q] [--budget BYTES] [--passthrough]
"""

import argparse
import io
import sys
import time
import uuid

from confluent_kafka import Producer
from PIL import Image


def frames(path, loop):
    """JPEG frames of an MJPEG file, from FF D8 to FF D9, again from the start with loop."""
    while True:
        buf = b""
        any_frame = False
        with open(path, "rb") as f:
            while True:
                chunk = f.read(1 << 20)
                if not chunk:
                    break
                buf += chunk
                start = 0
                while True:
                    soi = buf.find(b"\xff\xd8", start)
                    if soi < 0:
                        start = len(buf)
                        break
                    eoi = buf.find(b"\xff\xd9", soi + 2)
                    if eoi < 0:
                        start = soi
                        break
                    any_frame = True
                    yield buf[soi:eoi + 2]
                    start = eoi + 2
                buf = buf[start:]
        if not loop or not any_frame:
            return


def reencode(data, quality, budget):
    """(jpeg bytes, quality used, encodes) for `data` re-encoded at the highest quality from
    `quality` down in steps of 5 that fits `budget`; None when even q5 does not fit."""
    img = Image.open(io.BytesIO(data))
    img.load()
    encodes = 0
    q = quality
    while q >= 5:
        out = io.BytesIO()
        img.save(out, format="JPEG", quality=q, subsampling="4:2:0")
        encodes += 1
        if out.tell() <= budget:
            return out.getvalue(), q, encodes
        q -= 5
    return None


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--mjpeg", required=True)
    p.add_argument("--frames", type=int, required=True)
    p.add_argument("--loop", action="store_true")
    p.add_argument("--quality", type=int, default=85)
    p.add_argument("--budget", type=int, default=1_000_000)
    p.add_argument("--passthrough", action="store_true")
    p.add_argument("--device", default="py-cam")
    a = p.parse_args()

    producer = Producer({
        "bootstrap.servers": a.bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "message.max.bytes": max(a.budget + 65536, 1_000_000),
        "queue.buffering.max.kbytes": 65536,
    })
    failed = []
    delivered = [0]

    def report(err, _msg):
        if err is not None:
            failed.append(str(err))
        else:
            delivered[0] += 1

    start_quality = a.quality
    encodes = 0
    produced = 0
    for seq, data in enumerate(frames(a.mjpeg, a.loop)):
        if seq >= a.frames:
            break
        if a.passthrough:
            value, q = data, None
        else:
            fitted = reencode(data, start_quality, a.budget)
            if fitted is None:
                print(f"frame {seq} does not fit {a.budget} B", file=sys.stderr)
                continue
            value, q, n = fitted
            encodes += n
            # The next frame starts where this one fitted; every 30 frames from the top
            # again, so the quality can climb back when the scene allows.
            start_quality = a.quality if seq % 30 == 29 else q
        headers = [
            ("edgecam.device", a.device.encode()),
            ("edgecam.seq", str(seq).encode()),
            ("edgecam.frame_id", str(uuid.uuid4()).encode()),
            ("edgecam.captured_at", str(time.time_ns() // 1_000_000).encode()),
            ("content-type", b"image/jpeg"),
        ]
        if q is not None:
            headers.append(("edgecam.quality", str(q).encode()))
        while True:
            try:
                producer.produce(a.topic, value=value, key=a.device, headers=headers,
                                 on_delivery=report)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
        produced += 1
    left = producer.flush(60)
    print(f"python pipeline: {produced} frames produced, {delivered[0]} delivered, "
          f"{encodes} encodes", file=sys.stderr)
    if failed or left or delivered[0] != produced:
        print(f"python pipeline: {len(failed)} failed, {left} undelivered: {failed[:3]}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
