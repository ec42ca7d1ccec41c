"""Loss heads are a fact of the registry entry (``VertexType.loss_head``), not a list of type names elsewhere."""
from __future__ import annotations

import pytest

import graphspec
from graphspec.registry import all_types
from graphspec.train.steps import heads_of


@pytest.mark.parametrize("name", sorted(all_types()))
def test_a_type_is_a_loss_head_exactly_when_it_has_a_loss(name):
    entry = all_types()[name]
    assert entry.loss_head == ("loss" in entry.Params.model_fields)


def test_training_finds_its_heads_through_the_registry():
    net = graphspec.build("specs/nn4small2.yaml")
    assert [h.name for h in heads_of(net)] == ["lossLayer"]
    cut = graphspec.snip(net, ["embeddings"])
    with pytest.raises(graphspec.GraphspecError) as e:
        heads_of(cut)
    assert str(e.value) == ("cannot train 'nn4small2': none of its outputs (embeddings) is an output layer "
                            "(center_loss_output or cnn_loss or loss or output or rnn_loss or rnn_output) with a loss; give "
                            "one in the spec or in the recipe's 'losses'")
