"""The state dict is a file format: keys, shapes, dtypes and order must be
the original's (tests/data/reference/cgrseg_*_state_keys.tsv), and the
reference weight rule must reproduce the oracle's weights."""
import csv
import math

import pytest
import torch

from reference import (REFERENCE_DIR, build_reference_model,
                       reference_state_dict, state_spec)


# The fast tier (-m "not e2e") checks T; B and L are e2e.
VARIANTS = ['t'] + [pytest.param(v, marks=pytest.mark.e2e) for v in 'bl']


def read_key_table(variant: str):
    with open(REFERENCE_DIR / f'cgrseg_{variant}_state_keys.tsv') as f:
        rows = list(csv.DictReader(f, delimiter='\t'))
    return [(row['key'], row['shape'], row['dtype']) for row in rows]


def shape_text(tensor: torch.Tensor) -> str:
    return 'x'.join(map(str, tensor.shape)) or 'scalar'


@pytest.mark.parametrize('variant', VARIANTS)
def test_weight_rule_matches_oracle_sums(variant):
    spec = state_spec(variant)
    state = reference_state_dict(variant)
    for key, expected in spec['float_entry_sums'].items():
        actual = state[key].double().sum().item()
        assert math.isclose(actual, expected, rel_tol=1e-9, abs_tol=1e-9), key


@pytest.mark.parametrize('variant', VARIANTS)
def test_state_dict_keys_shapes_and_order_match_original(variant):
    model, _ = build_reference_model(variant)
    actual = [(key, shape_text(value), str(value.dtype).replace('torch.', ''))
              for key, value in model.state_dict().items()]
    assert actual == read_key_table(variant)
    spec = state_spec(variant)
    params = dict(model.named_parameters())
    assert sorted(params) == sorted(spec['param_names'])
    assert sum(p.numel() for p in params.values()) == \
        spec['num_params']['total']


@pytest.mark.parametrize('variant', VARIANTS)
def test_bias_index_tables_are_the_originals(variant):
    """Our relative-offset numbering reproduces the original index buffers."""
    from mmseg.registry import MODELS

    import cgrseg  # noqa: F401
    model, cfg = build_reference_model(variant)
    fresh = MODELS.build(cfg.model)
    reference = reference_state_dict(variant)
    for key, value in fresh.state_dict().items():
        if key.endswith('attention_bias_idxs_seg'):
            assert torch.equal(value, reference[key]), key
