"""The built-in demo: ``python demo.py`` runs with no downloads and no arguments.

Today it shows the preprocessing end to end on built-in synthetic photographs: one camera-sized
photograph per grade is drawn, its fundus disc found, cropped and normalised by Eq. 1 at every
size, and a preview panel (the paper's Fig. 3, one row per photograph) is written. The training
and export stages join this demo as they land.
"""

import os
import time

from absl import app, flags

from m2cnn_tf import fundus, synthetic
from m2cnn_tf.config import NUM_GRADES

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", "demo_output", "Folder for everything the demo writes.")
flags.DEFINE_list("sizes", ["224", "448", "720"], "Normalised sizes to show.")
flags.DEFINE_integer("seed", 0, "Seed of the synthetic photographs.")


def main(argv):
    del argv
    sizes = [int(s) for s in FLAGS.sizes]
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    print(f"Drawing {NUM_GRADES} synthetic fundus photographs (one per grade)...")
    photos = [synthetic.make_fundus(grade, seed=FLAGS.seed * 1000 + grade)
              for grade in range(NUM_GRADES)]
    print(f"{'grade':>5}  {'eye':<5}  {'photograph':>11}  {'disc found (cx, cy, r)':>26}  "
          f"{'true disc':>22}  {'ms':>5}")
    for photo in photos:
        start = time.perf_counter()
        circle = fundus.find_fundus(photo.image)
        fundus.normalize_fundus_multi(photo.image, sizes, circle)
        elapsed = 1000 * (time.perf_counter() - start)
        h, w = photo.image.shape[:2]
        tx, ty, tr = photo.disc
        print(f"{photo.grade:>5}  {photo.eye:<5}  {w:>5}x{h:<5}  "
              f"({circle.cx:7.1f}, {circle.cy:7.1f}, {circle.radius:6.1f})  "
              f"({tx:6.1f}, {ty:6.1f}, {tr:6.1f})  {elapsed:5.0f}")
    output = os.path.join(FLAGS.output_dir, "preview.png")
    fundus.write_preview([p.image for p in photos], output, sizes,
                         titles=[f"grade {p.grade}, {p.eye} eye" for p in photos])
    print(f"\nWrote {output}: for each photograph the detected field of view, the centred crop "
          f"and Eq. 1 at {', '.join(map(str, sizes))} px.")


if __name__ == "__main__":
    app.run(main)
