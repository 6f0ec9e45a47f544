"""The libyaml-backed loader and the pure-Python one read every configuration the same.

`read_yaml` parses with libyaml's C parser where PyYAML has it and, on any failure, parses
again with the pure-Python parser so that the message is the reference one: these tests hold
the fast path to the reference on generated documents and on broken ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from tlsprobe.exporter.config import yamlfile

pytestmark = pytest.mark.skipif(not yaml.__with_libyaml__, reason="PyYAML built without libyaml")

_FAST: Any = yamlfile._LOADERS[0]
_PURE: Any = yamlfile._LOADERS[-1]

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=20),
    st.dates(),
)
_keys = st.one_of(st.text(max_size=12), st.integers(min_value=-1000, max_value=1000))
_documents = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_keys, inner, max_size=4)),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(_documents, st.booleans(), st.booleans())
def test_both_loaders_give_the_same_data(document: object, flow: bool, sort: bool) -> None:
    text = yaml.safe_dump(document, default_flow_style=flow, sort_keys=sort, allow_unicode=True)
    fast = yaml.load(text, Loader=_FAST)
    pure = yaml.load(text, Loader=_PURE)
    assert fast == pure
    assert repr(fast) == repr(pure)  # same types too (1 == 1.0 == True)


def test_a_config_shaped_document_reads_the_same(tmp_path: Path) -> None:
    text = "\n".join(
        [
            "state_dir: /var/lib/tlsprobe",
            "defaults: &d {port: 25, timeout: 10s, starttls: true}",
            "tenants:",
            "  contoso:",
            "    accepted_domains: [contoso.test, 'fabrikam.test']",
            "    targets:",
            "      - {name: mx1, host: mx1.contoso.test, <<: *d}",
            "      - name: mx2",
            "        host: mx2.contoso.test",
            "        expires: 2027-01-02",
            "        at: 2027-01-02T03:04:05Z",
            "        big: 0x1F",
            "        octal: 0o17",
            "        note: |",
            "          two",
            "          lines",
        ]
    )
    path = tmp_path / "tlsprobe.yml"
    path.write_text(text, encoding="utf-8")
    assert yamlfile.read_yaml(path) == yaml.load(text, Loader=_PURE)


@pytest.mark.parametrize(
    "text",
    [
        "a: 1\na: 2\n",  # duplicate key (a constructor error)
        "a: [1, 2\n",  # unclosed flow sequence (a parser error)
        "a: *nope\n",  # undefined alias
        "a: !secret x\n",  # local tag
        "a: 2027-13-45\n",  # not a date
        "a:\tb\n  c: d\n",  # tab and bad indentation (scanner error)
        "a: " + "9" * 5000 + "\n",  # integer too large
        "a: " + "[" * 5000 + "]" * 5000 + "\n",  # nesting too deep
    ],
)
def test_an_error_reads_as_the_pure_python_parser_says(tmp_path: Path, text: str) -> None:
    path = tmp_path / "tlsprobe.yml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(yamlfile.YamlFileError) as fast:
        yamlfile.read_yaml(path)
    with pytest.raises(yamlfile.YamlFileError) as pure:
        yamlfile._load(text, (_PURE,))
    assert fast.value.message == pure.value.message
    assert (fast.value.where, fast.value.problem) == (pure.value.where, pure.value.problem)
