"""Personal API keys: only hashes are stored; roles; the server's service key."""

from __future__ import annotations

import hashlib

import pytest

from devcloud import db, keys


@pytest.fixture
def conn(tmp_path):
    connection = db.connect(tmp_path)
    yield connection
    connection.close()


def test_hash_is_sha256_hex_and_stable():
    key = "bigeye_pak_abc"
    assert keys.hash_key(key) == hashlib.sha256(b"bigeye_pak_abc").hexdigest()
    assert keys.hash_key(key) == keys.hash_key(key)
    assert keys.hash_key(key) != keys.hash_key(key + "x")


def test_new_keys_are_long_random_and_prefixed():
    a, b = keys.new_key(), keys.new_key()
    assert a != b and a.startswith("bigeye_pak_") and len(a) > 40


def test_only_the_hash_is_stored_and_roles_are_kept(conn, tmp_path):
    admin = keys.create_key(conn, "admin")
    member = keys.create_key(conn, "member")
    assert keys.role_of(conn, admin) == "admin"
    assert keys.role_of(conn, member) == "member"
    assert keys.role_of(conn, "bigeye_pak_unknown") is None
    stored = [row[0] for row in conn.execute("SELECT key_hash FROM api_keys")]
    assert sorted(stored) == sorted([keys.hash_key(admin), keys.hash_key(member)])
    conn.execute("PRAGMA wal_checkpoint(FULL)")
    assert admin.encode() not in (tmp_path / "cloud.db").read_bytes()


def test_unknown_role_is_refused(conn):
    with pytest.raises(ValueError, match="admin, member"):
        keys.create_key(conn, "owner")


@pytest.mark.parametrize(
    ("header", "key"),
    [
        ("apikey abc", "abc"),
        ("ApiKey  abc ", "abc"),
        ("Bearer abc", None),
        ("apikey", None),
        ("", None),
        (None, None),
    ],
)
def test_authorization_header(header, key):
    assert keys.parse_authorization(header) == key


def test_service_key_is_0600_and_reused(conn, tmp_path):
    first = keys.ensure_service_key(conn, tmp_path)
    path = tmp_path / "service.key"
    assert path.stat().st_mode & 0o777 == 0o600
    assert keys.read_service_key(tmp_path) == first
    assert keys.role_of(conn, first) == "admin"
    assert keys.ensure_service_key(conn, tmp_path) == first


def test_service_key_unknown_to_the_store_is_replaced(conn, tmp_path):
    (tmp_path / "service.key").write_text("bigeye_pak_stale\n")
    key = keys.ensure_service_key(conn, tmp_path)
    assert key != "bigeye_pak_stale" and keys.role_of(conn, key) == "admin"
