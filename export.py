"""Export a trained M²CNN as a TF Serving SavedModel: ``python export.py --model_dir=... ``.

Thin entry point. Export (raw-photograph serving signature with in-graph preprocessing) is the
export issue's work and is not in this version yet; this command says so.
"""

import sys

from absl import app


def main(argv):
    del argv
    sys.exit("export.py: SavedModel export is not implemented in this version of m2cnn-tf yet "
             "(see the project's export issue).")


if __name__ == "__main__":
    app.run(main)
