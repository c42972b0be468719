"""The examples in the engine modules' docstrings run and print what they say."""

import doctest

import pytest

from scanner_nb import _compat, client, names, plan, run, streamops, types
from scanner_nb.sources import memory, stored


@pytest.mark.parametrize("module", [_compat, names, plan, types, streamops, run, memory, stored, client],
                         ids=lambda m: m.__name__)
def test_docstring_examples(module):
    import scanner_nb

    result = doctest.testmod(module, extraglobs={"sp": scanner_nb, "Client": client.Client,
                                                 "MemoryStream": memory.MemoryStream},
                             optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
