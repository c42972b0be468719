"""The examples in the engine modules' docstrings run and print what they say."""

import doctest

import pytest

from scanner_nb import client, names, plan, run, session, streamops, types
from scanner_nb.sources import base, memory, stored


@pytest.mark.parametrize("module", [names, plan, types, streamops, run, base, memory, stored, client, session],
                         ids=lambda m: m.__name__)
def test_docstring_examples(module):
    import scanner_nb

    result = doctest.testmod(module, extraglobs={"sp": scanner_nb, "Client": client.Client,
                                                 "MemoryStream": memory.MemoryStream},
                             optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
