"""web-config.yml is read by the same bounded reader as tlsprobe.yml, duplicate-key check included.

A user listed twice under `basic_auth_users` used to keep only the last hash, silently: the
first password stopped working with no word at load.  Now the file is refused, and the error
names the line but neither the user nor the hash (the file holds secrets).
"""

from __future__ import annotations

from pathlib import Path

import bcrypt
import pytest

from tlsprobe.exporter.config.web import WebConfigError, load_web_config

HASH = bcrypt.hashpw(b"scrape", bcrypt.gensalt(rounds=4)).decode()
OTHER = bcrypt.hashpw(b"other", bcrypt.gensalt(rounds=4)).decode()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "web.yml"
    path.write_text(text)
    return path


def test_a_user_listed_twice_is_refused_without_echoing_it(tmp_path: Path) -> None:
    path = write(tmp_path, f"basic_auth_users:\n  promsecret: '{HASH}'\n  promsecret: '{OTHER}'\n")
    with pytest.raises(WebConfigError) as caught:
        load_web_config(path)
    message = str(caught.value)
    assert message == f"{path}: not valid YAML at line 3, column 3: duplicate key"
    assert "promsecret" not in message and "$2" not in message


def test_a_section_given_twice_is_refused(tmp_path: Path) -> None:
    text = "http_server_config: {}\nhttp_server_config: {headers: {}}\n"
    with pytest.raises(WebConfigError, match=r"line 2, column 1: duplicate key$"):
        load_web_config(write(tmp_path, text))


def test_distinct_users_still_load(tmp_path: Path) -> None:
    path = write(tmp_path, f"basic_auth_users:\n  a: '{HASH}'\n  b: '{OTHER}'\n")
    web = load_web_config(path)
    assert set(web.users) == {"a", "b"}


def test_a_yaml_error_names_the_place_and_not_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "basic_auth_users:\n  a: 'Sekr1t\n")
    with pytest.raises(WebConfigError) as caught:
        load_web_config(path)
    assert "not valid YAML at line" in str(caught.value)
    assert "Sekr1t" not in str(caught.value)
