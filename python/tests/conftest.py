import gc

import pytest

import mapkv


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "test.mapkv")


@pytest.fixture
def db(path):
    database = mapkv.open(path)
    yield database
    database.close()
    # Transactions, cursors and views a test left behind hold the file open; collect
    # them so that the next test starts clean.
    gc.collect()
