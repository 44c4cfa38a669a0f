"""The M²CNN network: architecture and switch, weight transfer between stages, accounting.

    blocks        block names, the cells of each path, a built model's blocks and variables
    irv2          Inception-ResNet-v2's pieces (Keras' layers and names, our code)
    transfer      weights from stage to stage (TransferReport) and from Keras' notop file
    accounting    parameter arithmetic, feature-map sizes, MACs/FLOPs, the printed summary
    architecture  the Multi-Cell switch and build_m2cnn: BaseNet, the cells on the path, heads
    inference     running the network on a batch that may be empty
    forward       how a train step calls it: recomputed segments, frozen batch norm
"""

from m2cnn_tf import config  # noqa: F401  (callers read m2cnn.config.MODEL)
from m2cnn_tf.model.accounting import (  # noqa: F401
    block8_parameters,
    block_macs,
    cell_group_parameters,
    expected_cell_parameters,
    feature_map_sizes,
    format_summary,
    head_parameters,
    reduction_b_parameters,
    summarize,
)
from m2cnn_tf.model.architecture import (  # noqa: F401
    IMAGENET,
    build_m2cnn,
    check_multicell,
    check_resolution,
    check_variant,
    model_name,
    multicell_path,
)
from m2cnn_tf.model.blocks import (  # noqa: F401
    BASENET,
    BLOCKS,
    CELLS_ON_PATH,
    HEAD_LAYERS,
    HEADS,
    LARGE,
    LARGE_CELLS,
    MEDIAL_CELLS,
    MEDIUM,
    OUTPUTS,
    POOLING,
    RESCALE,
    SMALL,
    all_layers,
    block_variables,
    model_blocks,
    path_of,
)
from m2cnn_tf.model.forward import (  # noqa: F401
    BATCH_NORMS,
    RECOMPUTE,
    Segment,
    body_segments,
    training_forward,
)
from m2cnn_tf.model.inference import unless_empty  # noqa: F401
from m2cnn_tf.model.irv2 import (  # noqa: F401
    ResidualScale,
    conv2d_bn,
    inception_resnet_block,
    inception_resnet_v2_notop,
    reduction_b,
)
from m2cnn_tf.model.transfer import TransferReport, load_notop_units, transfer_weights  # noqa: F401
