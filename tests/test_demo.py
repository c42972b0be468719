"""The README's set-up-and-run example computes what it says."""

from scanner_nb import demo


def test_demo_end_to_end(tmp_path):
    out = demo.main(str(tmp_path))
    assert out["frames"] == 96 and out["keyframes"] == [0, 24, 48, 72]
    assert out["sampled_rows"] == list(range(0, 96, 8))
    assert out["thumbnail_shape"] == (12, 96, 160, 3)
    assert out["motion_first"][0] == 0.0 and all(m > 0 for m in out["motion_first"][1:])
    assert out["round_trip_exact"]
