import json
import mmap
import re
import shutil
from dataclasses import replace

import numpy as np
import pytest

import app.model_store as model_store_module
from app.memory import drop_mapped_pages
from app.ml.artifacts import DENSE_FIELDS, ID_FIELDS, SPARSE_FIELDS, OrgModels
from app.ml.id_index import Ids
from app.ml.interactions import CatalogSnapshot
from app.ml.train import train_org_models
from app.model_store import ModelStore, new_version
from tests.ml.conftest import DAY, NOW

ORG = "6f1c2a52-7d1e-4a53-9f0b-2b8d3c1e9a10"


@pytest.fixture
def models(events, params) -> OrgModels:
    for user in range(6):
        events.add(f"ü{user}", "tent", "view", t=NOW - user * DAY, session="s")
        events.add(f"ü{user}", "pegs", "purchase", t=NOW - user * DAY + 60, order=f"o{user}", price=9.5)
        events.add(f"ü{user}", "tent", "purchase", t=NOW - user * DAY + 60, order=f"o{user}")
    catalog = CatalogSnapshot.build(
        ["tent", "pegs", "stove-日本"], attributes=[{"brand": "x"}, {"brand": "x"}, {}]
    )
    trained, timings = train_org_models(events.log(), catalog, params, version=new_version(NOW))
    trained.extra["timings_s"] = timings
    return trained


def assert_same(loaded: OrgModels, original: OrgModels):
    assert loaded.version == original.version and loaded.trained_at == original.trained_at
    assert loaded.params == original.params and loaded.n_interactions == original.n_interactions
    assert loaded.extra == original.extra
    for name in ID_FIELDS:
        assert getattr(loaded, name).tolist() == getattr(original, name).tolist(), name
    for name in SPARSE_FIELDS:
        got, want = getattr(loaded, name), getattr(original, name)
        assert got.shape == want.shape and got.dtype == want.dtype, name
        for part in ("data", "indices", "indptr"):
            np.testing.assert_array_equal(getattr(got, part), getattr(want, part), err_msg=name)
    for name in DENSE_FIELDS:
        got, want = getattr(loaded, name), getattr(original, name)
        assert got.dtype == want.dtype, name
        np.testing.assert_array_equal(got, want, err_msg=name)


def test_a_saved_bundle_loads_back_equal(tmp_path, models):
    store = ModelStore(tmp_path)
    path = store.save(ORG, models)
    assert path == tmp_path / ORG / models.version
    assert sorted(p.name for p in path.iterdir()) == ["arrays", "manifest.json"]
    loaded = store.load(ORG, models.version)
    assert_same(loaded, models)
    assert loaded.item_index == models.item_index and loaded.user_index["ü3"] == models.user_index["ü3"]
    np.testing.assert_allclose(loaded.item_factor_gram, models.item_factor_gram)


def test_the_files_hold_no_object_arrays_and_the_manifest_describes_them(tmp_path, models):
    path = ModelStore(tmp_path).save(ORG, models)
    files = sorted((path / "arrays").iterdir())
    assert all(np.load(f, allow_pickle=False).dtype != object for f in files)
    names = [f.name.removesuffix(".npy") for f in files]
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["arrays"] == names
    assert manifest["counts"] == {"items": 3, "users": 6, "interactions": 18}
    assert manifest["params"]["factors"] == models.params.factors


def test_latest_is_the_newest_by_training_time_whatever_the_save_order(tmp_path, models):
    store = ModelStore(tmp_path)
    assert store.latest_version(ORG) is None and store.load_latest(ORG) is None
    newer = replace(models, version=new_version(NOW + 60), trained_at=NOW + 60)
    store.save(ORG, newer)
    store.save(ORG, models)
    assert store.latest_version(ORG) == newer.version
    assert store.versions(ORG) == [models.version, newer.version]
    (tmp_path / ORG / "LATEST").unlink()
    assert store.latest_version(ORG) == newer.version, "without the pointer, manifests decide"
    assert store.load_latest(ORG).version == newer.version


def test_prune_keeps_the_newest_and_never_the_latest(tmp_path, models):
    store = ModelStore(tmp_path)
    bundles = [replace(models, version=new_version(NOW + i * 60), trained_at=NOW + i * 60) for i in range(5)]
    for bundle in bundles:
        store.save(ORG, bundle)
    (tmp_path / ORG / "LATEST").write_text(bundles[0].version)  # an operator rolled back
    removed = store.prune(ORG, keep=2)
    assert sorted(removed) == [b.version for b in bundles[1:3]]
    assert store.versions(ORG) == [bundles[0].version, bundles[3].version, bundles[4].version]
    assert store.latest_version(ORG) == bundles[0].version


def test_a_failed_save_leaves_no_trace(tmp_path, models, monkeypatch):
    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(model_store_module.np, "save", broken_save)
    store = ModelStore(tmp_path)
    with pytest.raises(OSError, match="disk full"):
        store.save(ORG, models)
    assert list((tmp_path / ORG).iterdir()) == []
    assert store.latest_version(ORG) is None


def test_a_version_is_never_overwritten(tmp_path, models):
    store = ModelStore(tmp_path)
    store.save(ORG, models)
    with pytest.raises(FileExistsError):
        store.save(ORG, models)


@pytest.mark.parametrize("org_id", ["../escape", "a/b", ".hidden", ""])
def test_org_ids_cannot_leave_the_store(tmp_path, models, org_id):
    with pytest.raises(ValueError):
        ModelStore(tmp_path).save(org_id, models)


def test_versions_sort_by_time():
    early, late = new_version(1_795_000_000.0), new_version(1_795_000_001.0)
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{6}", early)
    assert early.startswith("20261118T110640Z-") and early < late


def test_a_format_1_bundle_still_loads_without_content_index_or_demotion(tmp_path, models):
    store = ModelStore(tmp_path)
    directory = store.save("org", models)
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["format"] = 1
    (directory / "manifest.json").write_text(json.dumps(manifest))
    old = {name: np.load(directory / "arrays" / f"{name}.npy") for name in manifest["arrays"]
           if not name.startswith(("content_matrix", "content_tokens", "content_idf", "exposure_penalty"))}
    single_file(directory, old)
    loaded = store.load("org", models.version)
    assert loaded.content_matrix.shape == (models.n_items, 0) and loaded.content_tokens.size == 0
    assert loaded.exposure_penalty.tolist() == [1.0] * models.n_items
    assert loaded.exposure_demotion is None  # nothing demoted: personalized skips the step
    np.testing.assert_array_equal(loaded.item_factors, models.item_factors)


def single_file(directory, arrays) -> None:
    """The layout of versions written before one .npy per array: one models.npz."""
    shutil.rmtree(directory / "arrays")
    np.savez(directory / "models.npz", **arrays)


def file_backed(array) -> bool:
    while array is not None:
        if isinstance(array, (np.memmap, mmap.mmap)):
            return True
        array = getattr(array, "base", None)
    return False


def test_a_loaded_version_is_memory_mapped_and_read_only(tmp_path, models):
    """Loading reads nothing up front (the api holds only the pages requests touch) and nothing
    can write into a served model."""
    store = ModelStore(tmp_path, mmap_min_bytes=0)
    store.save(ORG, models)
    loaded = store.load(ORG, models.version)
    for array in (loaded.item_factors, loaded.popularity, loaded.item_neighbors.data, loaded.user_items.indices):
        assert file_backed(array), type(array)
        assert not array.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        loaded.popularity[0] = 1.0


def test_small_arrays_are_read_into_memory_and_stay_read_only(tmp_path, models):
    """A memory map holds a file descriptor while it lives: mapping every small array of every
    cached org ran the api out of descriptors. Only arrays of at least mmap_min_bytes are mapped."""
    store = ModelStore(tmp_path)
    store.save(ORG, models)
    loaded = store.load(ORG, models.version)
    assert max(loaded.to_arrays()[name].nbytes for name in loaded.to_arrays()) < store.mmap_min_bytes
    for array in (loaded.item_factors, loaded.popularity, loaded.item_neighbors.data):
        assert not file_backed(array)
        assert not array.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        loaded.popularity[0] = 1.0


def test_a_single_file_version_from_before_still_loads_equal(tmp_path, models):
    store = ModelStore(tmp_path)
    directory = store.save(ORG, models)
    manifest = json.loads((directory / "manifest.json").read_text())
    single_file(directory, {name: np.load(directory / "arrays" / f"{name}.npy") for name in manifest["arrays"]})
    assert_same(store.load(ORG, models.version), models)


def test_warm_builds_what_serving_derives_before_a_request_needs_it(tmp_path, models):
    store = ModelStore(tmp_path)
    store.save("org", models)
    loaded = store.load_latest("org")
    assert loaded is not None and "factor_index" not in vars(loaded)
    loaded.warm()  # what the api's loader thread does before the swap
    derived = vars(loaded)
    assert {"user_index", "item_factor_gram", "exposure_demotion", "factor_index"} <= set(derived)
    index = derived["factor_index"]
    assert index is not None and index.n_items == models.n_items
    # Not built for serving: a second item index (requests look items up in the catalog's), and
    # the content tokens' str objects (read only to place an item upserted since the train).
    assert "item_index" not in derived and "content_token_index" not in derived
    assert isinstance(loaded.content_tokens, Ids)
    assert loaded.content_tokens.tolist() == models.content_tokens.tolist() and len(loaded.content_tokens) > 0


def test_the_item_factors_leave_the_resident_set_after_warm_and_read_back_the_same(tmp_path, models):
    """warm() reads every item's factors (the gram, the factor index); a memory-mapped array
    is then dropped from the process's resident pages, and its rows read back from the file."""
    store = ModelStore(tmp_path, mmap_min_bytes=1)
    store.save("org", models)
    loaded = store.load_latest("org")
    assert loaded is not None and isinstance(loaded.item_factors, np.memmap)
    loaded.warm()
    assert drop_mapped_pages(loaded.item_factors) and not drop_mapped_pages(models.item_factors)
    assert np.array_equal(loaded.item_factors, models.item_factors)
    assert loaded.user_index["ü3"] == models.user_index["ü3"]
