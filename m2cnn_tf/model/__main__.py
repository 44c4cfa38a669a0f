"""``python -m m2cnn_tf.model --resolution=720 --variant=m2cnn``: path, feature maps, parameters, FLOPs."""

from m2cnn_tf.model.architecture import main

if __name__ == "__main__":
    main()
