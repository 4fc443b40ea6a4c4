"""Deploy records (serving/record.py): the knobs in effect, written once by deploy, read by the sweep."""

import json
import os

import pytest

from common.errors import UsageError
from serving.config import DEFAULT_TF_BATCHING_FILE, DeployConfig
from serving.record import DeployRecord, TfKnobs, TorchKnobs, load_record, read_record, tf_knobs_in_effect, write_record


def _tf_record(knobs: TfKnobs, pgid: int | None = None) -> DeployRecord:
    return DeployRecord("tf", "dropin", "x", "tiny", {"rest": 1, "grpc": 2}, knobs, pgid=pgid or os.getpgid(0))


def test_a_record_reads_back_as_written_with_typed_knobs(tmp_path):
    written = write_record(tmp_path, DeployRecord("torch", "native", "TorchServe", "tiny", {"inference": 1},
                                                  TorchKnobs(2, 8, 5, True), pgid=os.getpgid(0), key_file="k"))
    assert written.started  # dated when written
    read = read_record(tmp_path, "torch")
    assert read == written and isinstance(read.knobs, TorchKnobs) and read.knobs.workers == 2
    assert (tmp_path / "torch.pid").read_text().strip() == str(os.getpgid(0))


def test_a_record_whose_processes_are_gone_is_stale_and_removed(tmp_path):
    write_record(tmp_path, _tf_record(TfKnobs(False), pgid=2 ** 22 + 12345))  # no such process group
    assert load_record(tmp_path, "tf") is not None
    assert read_record(tmp_path, "tf") is None and not (tmp_path / "tf.json").exists()


def test_a_file_that_is_not_a_record_is_a_usage_error_naming_it(tmp_path):
    (tmp_path / "tf.json").write_text(json.dumps({"server": "tf", "mode": "dropin", "knobs": {}}))
    with pytest.raises(UsageError, match=r"tf.json is not a deploy record"):
        load_record(tmp_path, "tf")


def test_the_drop_in_records_every_batching_size_it_runs_with(tmp_path):
    knobs = tf_knobs_in_effect(True, DEFAULT_TF_BATCHING_FILE, "dropin")
    assert (knobs.max_batch_size, knobs.batch_timeout_micros, knobs.max_enqueued_batches,
            knobs.num_batch_threads) == (32, 2000, 100, 2)  # serving/tf/batching.config
    partial = tmp_path / "partial.config"
    partial.write_text("max_batch_size { value: 4 }\n")
    dropin = tf_knobs_in_effect(True, partial, "dropin")
    assert dropin.max_batch_size == 4 and dropin.batch_timeout_micros == 1000  # the drop-in's default
    official = tf_knobs_in_effect(True, partial, "binary")
    assert official.max_batch_size == 4 and official.batch_timeout_micros is None  # TF Serving's default: unknown
    assert tf_knobs_in_effect(False, partial, "dropin") == TfKnobs(enable_batching=False)


def test_an_unreadable_batching_file_leaves_its_sizes_unknown(tmp_path):
    knobs = tf_knobs_in_effect(True, tmp_path / "missing.config", "dropin")
    assert knobs.enable_batching and knobs.max_batch_size is None and knobs.batching_parameters_file


@pytest.mark.parametrize("grid_index", [0, 1, 2])
def test_tune_recognises_a_tf_server_already_running_a_grid_entry(grid_index, tmp_path):
    """Tune reads the knobs from the deploy record, so it need not redeploy a server that has them."""
    from loadtests.sweep import current_knobs
    from loadtests.tune import TF_GRID, _batching_file, runs_with

    entry = TF_GRID[grid_index]
    knobs = (tf_knobs_in_effect(True, _batching_file(entry, tmp_path), "dropin") if entry["enable_batching"]
             else TfKnobs(False))
    cfg = DeployConfig(model="tiny", artifacts=tmp_path)
    write_record(cfg.run_dir, _tf_record(knobs))
    found = current_knobs("tf", cfg)
    assert [runs_with(found, other) for other in TF_GRID] == [i == grid_index for i in range(len(TF_GRID))]
    assert found["file"] == knobs.batching_parameters_file
