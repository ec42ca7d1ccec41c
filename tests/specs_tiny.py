"""Small specs shared by several test modules: a conv -> batchnorm -> dense -> l2_normalize -> center-loss network
(the training tests), a conv -> softmax classifier (run folders, recipes, resuming from the command line) and a
Siamese pair of one shared dense layer (shared layers, several inputs)."""

TINY_CONV = """
version: 1
name: tiny-conv
seed: 7
defaults:
  activation: identity
  weight_init: relu
  l2: 0.01
  convolution_mode: same
  updater: {type: adam, lr: {lr}, beta1: 0.9, beta2: 0.999, eps: 0.01}
inputs:
  input1: {type: convolutional, channels: 3, height: 12, width: 12}
vertices:
  conv: {type: conv, inputs: [input1], kernel: 3, stride: 2, out: 4, bias_init: 0.2}
  bn: {type: batchnorm, inputs: [conv]}
  act: {type: activation, inputs: [bn], activation: relu}
  dense: {type: dense, inputs: [act], out: 6}
  emb: {type: l2_normalize, inputs: [dense]}
  head:
    type: center_loss_output
    inputs: [emb]
    out: 5
    loss: squared_loss
    activation: softmax
    lambda: 0.1
    alpha: 0.9
    gradient_normalization: renormalize_l2_per_layer
outputs: [head]
"""


def tiny_conv(lr: float) -> str:
    """The spec with Adam at learning rate ``lr``."""
    return TINY_CONV.replace("{lr}", repr(lr))


SIAMESE = """
version: 1
name: siamese
seed: 3
defaults: {activation: relu, weight_init: xavier}
inputs:
  left: {type: feed_forward, size: 6}
  right: {type: feed_forward, size: 6}
vertices:
  embed: {type: dense, inputs: [left], out: 4}
  embed-right: {shares: embed, inputs: [right]}
  distance: {type: l2_distance, inputs: [embed, embed-right]}
outputs: [distance]
"""


TINY_CLASSIFIER = """version: 1
name: tiny-classifier
seed: 3
defaults: {activation: relu, weight_init: xavier, updater: {type: sgd, lr: 0.01}}
inputs: {input1: {type: convolutional, channels: 3, height: 8, width: 8}}
vertices:
  conv: {type: conv, inputs: [input1], kernel: 3, stride: 2, out: 4}
  out: {type: output, inputs: [conv], out: 3, activation: softmax}
outputs: [out]
"""
