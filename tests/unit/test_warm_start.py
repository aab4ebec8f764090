"""Warm start: which of the previous run's weights a new run inherits (hand-made arrays, no TensorFlow)."""
import numpy as np

from libs.training import inherited_weights


def test_same_shapes_are_inherited_and_grown_embedding_tables_keep_their_old_rows():
    previous = [np.full((3, 2), 1.0), np.full((2,), 2.0), np.full((4, 2), 3.0)]
    fresh = [np.zeros((5, 2)), np.zeros((2,)), np.zeros((4, 2))]
    names = ["item_embedding/embeddings:0", "dense/bias:0", "user_embedding/embeddings:0"]

    weights, grown = inherited_weights(previous, fresh, names)

    # rows 0-2 are the items both runs know (stable vocabulary ids); rows 3-4 are new items
    np.testing.assert_array_equal(weights[0], [[1, 1], [1, 1], [1, 1], [0, 0], [0, 0]])
    np.testing.assert_array_equal(weights[1], [2, 2])
    np.testing.assert_array_equal(weights[2], previous[2])
    assert grown == {"item_embedding/embeddings:0": [3, 5]}


def test_a_changed_architecture_trains_from_scratch():
    embedding = ["item_embedding/embeddings:0"]
    # another embedding_dim
    assert inherited_weights([np.ones((3, 2))], [np.zeros((3, 4))], embedding) == (None, {})
    # a dense kernel that grew: its rows are not vocabulary ids
    assert inherited_weights([np.ones((3, 2))], [np.zeros((4, 2))], ["dense/kernel:0"]) == (None, {})
    # a vocabulary that shrank, and a weight added
    assert inherited_weights([np.ones((4, 2))], [np.zeros((3, 2))], embedding) == (None, {})
    assert inherited_weights([np.ones((3, 2))], [np.zeros((3, 2)), np.zeros(2)], embedding + ["b:0"]) == (None, {})
