"""Scanner's spellings, used the way Scanner's tutorials use them, with only the import changed.

Each test follows one of Scanner's tutorials (00 basics, 01 Python ops, 02 op attributes,
03 sampling, 04 slicing, 05 sources and sinks, 07 profiling) or a spelling of issue 12's table,
on a small clip and images made here, and checks values, on the threaded scheduler and a
LocalCluster (the ``client`` fixture).
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import cv2
import imageio.v3 as iio
import numpy as np
import pytest

import scanner_nb as sp
import scanner_nb.imgproc  # noqa: F401  (registers the built-in ops, as scannertools.imgproc did)
from scanner_nb import kernel
from scanner_nb.samples import frame_index, make_video

N, W, H, GOP = 24, 96, 64, 12


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("compat") / "example.mp4"
    return make_video(path, n_frames=N, width=W, height=H, gop=GOP)


@pytest.fixture(scope="module")
def decoded(video):
    with sp.Client(db_path=os.path.dirname(video) + "/db0", show_progress=False) as sc:
        (frames,) = sc.io.Input([sp.NamedVideoStream(sc, "v", path=video)]).compute()
    return frames


def test_00_basics_histograms_delete_and_storage(client, video, decoded):
    video_stream1 = sp.NamedVideoStream(client, "example1", path=video)
    frames = client.io.Input([video_stream1])
    hists = client.ops.Histogram(frame=frames)
    named_stream1 = sp.NamedStream(client, "example1_hist")
    job = client.run(client.io.Output(hists, [named_stream1]), sp.PerfParams.estimate(),
                     show_progress=False)
    assert job == [named_stream1] and isinstance(job.job_id, int)
    named_stream1.delete(client)  # Scanner passes the client
    assert not named_stream1.exists()

    video_stream2 = sp.NamedVideoStream(client, "example2", path=video)
    frames = client.io.Input([video_stream1, video_stream2])
    named_stream2 = sp.NamedStream(client, "example2_hist")
    client.run(client.io.Output(client.ops.Histogram(frame=frames),
                                [named_stream1, named_stream2]),
               sp.PerfParams.estimate(), show_progress=False)
    num_rows = 0
    for i, hist in enumerate(named_stream1.load()):
        assert len(hist) == 3 and hist[0].shape[0] == 16
        for c in range(3):  # equal to numpy's histogram of the decoded frame
            expected, _ = np.histogram(decoded[i][..., c], bins=16, range=(0, 256))
            np.testing.assert_array_equal(hist[c], expected)
        num_rows += 1
    assert num_rows == video_stream1.len() == N
    assert "example2_hist" in client.summarize()

    streams = [video_stream1, video_stream2, named_stream1, named_stream2]
    streams[0].storage().delete(client, streams)
    assert not named_stream1.exists() and not named_stream2.exists()
    assert os.path.exists(video)  # a video's delete forgets its index, never the user's file


def test_01_function_op_reads_config_args_and_save_mp4(client, video, decoded, tmp_path):
    seen = []

    @sp.register_python_op()
    def resize_fn(config, frame: sp.FrameType) -> sp.FrameType:
        seen.append(dict(config.args))
        return cv2.resize(frame, (config.args["width"], config.args["height"]))

    @sp.register_python_op()
    class ResizeClass(sp.Kernel):
        def __init__(self, config, width, height):
            self._width, self._height = width, height

        def execute(self, frame: sp.FrameType) -> sp.FrameType:
            return cv2.resize(frame, (self._width, self._height))

    frames = client.io.Input([sp.NamedVideoStream(client, "example", path=video)])
    resized_fn_frames = client.ops.resize_fn(frame=frames, width=64, height=48)
    resized_class_frames = client.ops.ResizeClass(frame=frames, width=32, height=24)
    (got,) = resized_fn_frames.compute()
    np.testing.assert_array_equal(got, np.stack([cv2.resize(f, (64, 48)) for f in decoded]))
    if client.distributed is None:
        assert seen and all(args == {"width": 64, "height": 48} for args in seen)

    fn_stream = sp.NamedVideoStream(client, "fn_frames")
    class_stream = sp.NamedVideoStream(client, "class_frames")
    client.run([client.io.Output(resized_fn_frames, [fn_stream]),
                client.io.Output(resized_class_frames, [class_stream])],
               sp.PerfParams.estimate(), show_progress=False)
    written = fn_stream.save_mp4(str(tmp_path / "01_resized_fn"))  # Scanner adds .mp4
    assert written == str(tmp_path / "01_resized_fn.mp4") and os.path.isfile(written)
    back = iio.imread(written, plugin="pyav")
    assert back.shape == (N, 48, 64, 3)
    assert [frame_index(f) for f in back] == list(range(N))
    assert next(iter(class_stream.load())).shape == (24, 32, 3)
    for stream in [fn_stream, class_stream]:
        stream.delete(client)


def test_02_op_properties_given_at_the_call(client, video, decoded):
    sizes = []

    @sp.register_python_op(batch=10)
    def batch_resize(config, frame: Sequence[sp.FrameType]) -> Sequence[sp.FrameType]:
        sizes.append(len(frame))
        return [cv2.resize(f, (config.args["width"], config.args["height"])) for f in frame]

    frames = client.io.Input([sp.NamedVideoStream(client, "example", path=video)])
    for batch in (10, 3):  # the call's batch overrides the decorator's for that call
        sizes.clear()
        out = client.ops.batch_resize(frame=frames, width=32, height=24, batch=batch)
        (got,) = out.compute(perf_params=sp.PerfParams.manual(batch, N))
        np.testing.assert_array_equal(got, np.stack([cv2.resize(f, (32, 24)) for f in decoded]))
        if client.distributed is None:
            assert max(sizes) == batch

    @sp.register_python_op(stencil=[0, 1])
    def pair(config, frame: Sequence[sp.FrameType]) -> Any:
        return (frame_index(frame[0]), frame_index(frame[1]))

    sampled = client.streams.Range(frames, [(0, 6)])
    (forward,) = client.ops.pair(frame=sampled, stencil=[0, 1]).compute()
    assert forward == [(i, min(i + 1, 5)) for i in range(6)]
    (backward,) = client.ops.pair(frame=sampled, stencil=[-2, 0]).compute()
    assert backward == [(max(i - 2, 0), i) for i in range(6)]

    @sp.register_python_op()
    class Count(sp.Kernel):
        def __init__(self, config):
            self.n = 0

        def reset(self):
            self.n = 0

        def execute(self, frame: sp.FrameType) -> Any:
            self.n += 1
            return self.n

    counted = client.ops.Count(frame=frames, bounded_state=3)
    (counts,) = client.streams.Gather(counted, [[0, 10, 15, 16, 17]]).compute(
        perf_params=sp.PerfParams.manual(N, N))
    assert counts == [1, 4, 4, 5, 6]  # warm-up of 3 rows before each discontinuity, then on
    (counts,) = client.ops.Count(frame=frames, unbounded_state=True).compute(
        perf_params=sp.PerfParams.manual(4, 4))
    assert counts == list(range(1, N + 1))
    (counts,) = client.ops.Count(frame=frames, device=sp.DeviceType.CPU).compute()
    assert counts[0] == 1


def test_03_sampling_with_scanner_keyword_names(client, video, decoded):
    frames = client.io.Input([sp.NamedVideoStream(client, "example", path=video)])
    strided = client.streams.Stride(frames, [4])
    hist_stream = sp.NamedVideoStream(client, "example_hist_strided")  # as Scanner's tutorial
    client.run(client.io.Output(client.ops.Histogram(frame=strided), [hist_stream]),
               sp.PerfParams.estimate(), show_progress=False)
    hists = list(hist_stream.load())
    assert len(hists) == round(N / 4) and hists[0].shape == (3, 16)
    assert hist_stream.type_name == "Any"

    def indices(stream):
        (got,) = stream.compute()
        return [None if isinstance(f, sp.NullElement) else frame_index(f) for f in got]

    streams = client.streams
    assert indices(streams.Stride(input=frames, strides=[5])) == [0, 5, 10, 15, 20]
    assert indices(streams.Range(input=frames, ranges=[(3, 6)])) == [3, 4, 5]
    assert indices(streams.Ranges(input=frames, intervals=[[(0, 2), (20, 22)]])) == [0, 1, 20, 21]
    assert indices(streams.StridedRange(input=frames, ranges=[(1, 10, 4)])) == [1, 5, 9]
    assert indices(streams.StridedRanges(input=frames, intervals=[(0, 6), (12, 18)],
                                         stride=3)) == [0, 3, 12, 15]
    assert indices(streams.Gather(input=frames, indices=[[17, 3, 3]])) == [17, 3, 3]
    short = streams.Range(frames, [(0, 3)])
    assert indices(streams.Repeat(input=short, spacings=[2])) == [0, 0, 1, 1, 2, 2]
    assert indices(streams.RepeatNull(input=short, spacings=[2])) == [0, None, 1, None, 2, None]
    assert indices(streams.All(input=short)) == [0, 1, 2]
    # a stream's argument as Scanner's keyword dict (scannerpy calls arg_builder(**arg))
    assert indices(streams.Range(frames, [{"start": 3, "end": 6}])) == [3, 4, 5]
    assert indices(streams.Stride(frames, [{"stride": 10}])) == [0, 10, 20]
    assert indices(streams.StridedRange(frames, [{"start": 1, "end": 10, "stride": 4}])) == [
        1, 5, 9]
    assert indices(streams.Gather(frames, [{"rows": [2, 1]}])) == [2, 1]
    assert indices(streams.Repeat(short, [{"spacing": 2}])) == [0, 0, 1, 1, 2, 2]
    with pytest.raises(sp.ScannerTypeError, match=r"keywords \['start', 'end'\]"):
        streams.Range(frames, [{"begin": 3, "end": 6}])


def test_04_slicing_with_partitions_and_state_at_the_call(client, video):
    @sp.register_python_op()
    class Seen(sp.Kernel):
        def __init__(self, config, start):
            self.start, self.n = start, 0

        def reset(self):
            self.n = 0

        def execute(self, frame: sp.FrameType) -> Any:
            self.n += 1
            return (frame_index(frame), self.n)

    frame = client.io.Input([sp.NamedVideoStream(client, "example", path=video)])
    sliced = client.streams.Slice(frame, partitions=[client.partitioner.ranges([(2, 6), (6, 9)])])
    out = client.streams.Unslice(client.ops.Seen(frame=sliced, start=0, bounded_state=2))
    (got,) = out.compute()
    assert [i for i, _ in got] == [2, 3, 4, 5, 6, 7, 8]
    assert [n for _, n in got][0] == 1 and [n for _, n in got][4] == 1  # state restarts per slice

    gathered = client.streams.Slice(input=frame,
                                    partitions=[client.partitioner.gather([[5, 1], [9]])])
    (got,) = client.streams.Unslice(input=client.ops.Seen(frame=gathered, start=0)).compute()
    assert [i for i, _ in got] == [5, 1, 9]
    ranges = client.streams.Slice(frame, [client.partitioner.strided_ranges([(0, 6), (10, 13)], 2)])
    (got,) = client.streams.Unslice(ranges).compute()
    assert [frame_index(f) for f in got] == [0, 2, 4, 10, 12]


@pytest.fixture
def images(tmp_path):
    """Three images of different formats and sizes, made here."""
    rng = np.random.default_rng(5)
    folder = tmp_path / "images"
    folder.mkdir()
    paths = []
    for i, ext in enumerate(["png", "bmp", "png"]):
        image = rng.integers(0, 256, (40 + 8 * i, 56, 3), dtype=np.uint8)
        path = folder / f"sample-frame-{i + 1}.{ext}"
        iio.imwrite(path, image)
        paths.append(str(path))
    (folder / "notes.txt").write_text("not an image")
    return paths


def test_05_files_in_and_out(client, images, tmp_path):
    image_stream = sp.FilesStream(images)
    compressed_images = client.io.Input([image_stream])
    frames = client.ops.ImageDecoder(img=compressed_images)
    resized_frames = client.ops.Resize(frame=frames, width=[64], height=[36])
    encoded = client.ops.ImageEncoder(frame=resized_frames, format="png")
    resized_paths = [str(tmp_path / "out" / f"resized-{i}.png") for i in range(3)]
    resized_stream = sp.FilesStream(resized_paths)
    job = client.run(client.io.Output(encoded, [resized_stream]), sp.PerfParams.estimate(),
                     cache_mode=sp.CacheMode.Overwrite, show_progress=False)
    assert job == [resized_stream]
    for source, written in zip(images, resized_paths):
        expected = cv2.resize(iio.imread(source), (64, 36))
        np.testing.assert_array_equal(iio.imread(written), expected)
    assert not [p for p in os.listdir(tmp_path / "out") if p.endswith(".part")]
    with open(resized_paths[1], "rb") as f:
        assert list(resized_stream.load_bytes(rows=[1]))[0] == f.read()
    with pytest.raises(sp.StreamExistsError):
        client.run(client.io.Output(encoded, [resized_stream]), sp.PerfParams.estimate(),
                   show_progress=False)

    jpgs = sp.FilesStream([p.replace(".png", ".jpg") for p in resized_paths])
    client.run(client.io.Output(client.ops.ImageEncoder(frame=resized_frames, format="jpg"),
                                [jpgs]), sp.PerfParams.estimate(), show_progress=False)
    back = [iio.imread(p) for p in jpgs.paths]
    assert all(b.shape == (36, 64, 3) for b in back)
    jpgs.storage().delete(client, [jpgs])
    assert not jpgs.exists()

    folder = os.path.dirname(images[0])
    (from_folder,) = client.io.Input([sp.ImagesStream(folder)]).compute()
    assert len(from_folder) == 3  # the text file is skipped; sizes differ: a list
    for got, path in zip(from_folder, sorted(images)):
        np.testing.assert_array_equal(got, iio.imread(path))
    with pytest.raises(sp.InputFileNotFoundError, match="missing.png"):
        client.io.Input([sp.FilesStream([images[0], folder + "/missing.png"])])


def test_05_a_failed_file_run_writes_nothing(local_client, images, tmp_path):
    @sp.register_python_op()
    def broken(config, img: bytes) -> bytes:
        if img.startswith(b"BM"):  # the bmp
            raise RuntimeError("cannot")
        return img

    targets = sp.FilesStream([str(tmp_path / f"copy-{i}") for i in range(3)])
    stream = local_client.ops.broken(img=local_client.io.Input([sp.FilesStream(images)]))
    with pytest.raises(sp.KernelError) as info:
        local_client.run(local_client.io.Output(stream, [targets]),
                         sp.PerfParams.manual(1, 1), show_progress=False)
    assert info.value.row == 1 and info.value.op == "broken"
    assert not any(name.startswith("copy-") for name in os.listdir(tmp_path))


def test_07_profile_and_chrome_trace(client, video, tmp_path):
    frames = client.io.Input([sp.NamedVideoStream(client, "example", path=video)])
    resized_frames = client.ops.Resize(frame=frames, width=[48], height=[32])
    output_stream = sp.NamedVideoStream(client, "example_profile")
    job_id = client.run(client.io.Output(resized_frames, [output_stream]),
                        sp.PerfParams.manual(6, 12), profiling=True, show_progress=False)
    profile = client.get_profile(job_id)
    path = profile.write_trace(str(tmp_path / "resize-graph.trace"))
    with open(path) as f:
        trace = json.load(f)["traceEvents"]
    resizes = [e for e in trace if e.get("name") == "Resize"]
    assert len(resizes) == N // 12
    assert sorted(tuple(e["args"]["rows"]) for e in resizes) == [(0, 12), (12, 24)]
    assert all(e["ph"] == "X" and e["dur"] >= 0 and e["args"]["stream"] == 0 for e in resizes)
    assert {e["name"] for e in trace} >= {"Input", "Resize", "process_name"}
    stats = {s["op"]: s for s in profile.statistics()}
    assert stats["Resize"]["rows"] == N and stats["Resize"]["tasks"] == 2
    assert "Resize" in profile.summary()
    assert client.get_profile(job_id.job_id) is profile
    with pytest.raises(sp.ScannerError):
        client.get_profile(12345)


def test_convert_color_takes_opencv_names(client, video, decoded):
    frames = client.io.Input([sp.NamedVideoStream(client, "example", path=video)])
    (gray,) = client.ops.ConvertColor(frame=frames, conversion=["COLOR_RGB2GRAY"]).compute()
    np.testing.assert_array_equal(
        gray, np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY)[..., None] for f in decoded]))
    (hsv,) = client.ops.ConvertColor(frame=frames, conversion=["hsv"]).compute()
    np.testing.assert_array_equal(hsv[3], cv2.cvtColor(decoded[3], cv2.COLOR_RGB2HSV))
    with pytest.raises(sp.ScannerValueError, match="COLOR_"):
        client.ops.ConvertColor(frame=frames, conversion=["COLOR_RGB2NOTHING"])


def test_scannertools_optical_flow_and_montage(client, video, decoded):
    frames = client.io.Input([sp.NamedVideoStream(client, "example", path=video)])
    (flow,) = client.ops.OpticalFlow(frame=client.streams.Range(frames, [(0, 4)])).compute()
    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in decoded[:4]]
    expected = cv2.calcOpticalFlowFarneback(gray[1], gray[2], None, 0.5, 3, 15, 3, 5, 1.2, 0)
    assert flow.shape == (4, H, W, 2) and flow.dtype == np.float32
    np.testing.assert_allclose(flow[1], expected, atol=1e-4)
    last = cv2.calcOpticalFlowFarneback(gray[3], gray[3], None, 0.5, 3, 15, 3, 5, 1.2, 0)
    np.testing.assert_allclose(flow[3], last, atol=1e-4)  # the last row's flow is to itself

    (grid,) = client.ops.Montage(frame=client.streams.Stride(frames, [4]), num_frames=6,
                                 target_width=24, frames_per_row=3).compute()
    whole = grid[5]
    assert whole.shape == (2 * 16, 3 * 24, 3)
    tile = whole[16:32, 24:48]  # row 1, column 1: the fifth sampled frame (index 16)
    np.testing.assert_array_equal(tile, cv2.resize(decoded[16], (24, 16),
                                                   interpolation=cv2.INTER_AREA))


def test_client_and_module_spellings(local_client, monkeypatch):
    sc = local_client
    assert sc.has_gpu() == sc.gpu_usable()
    assert sp.ScannerException is sp.ScannerError
    assert isinstance(None, sp.NullElement) and not isinstance(0, sp.NullElement)
    perf = sp.PerfParams.manual(8, 64, pipeline_instances_per_node=1)
    assert (perf.work_packet_size, perf.io_packet_size, perf.pipeline_instances_per_node) == (
        8, 64, 1)
    est = sp.PerfParams.estimate(max_memory_util=0.5, total_memory=1 << 30, work_io_ratio=0.1,
                                 queue_size_per_pipeline=2)
    assert est.memory_fraction == 0.5 and est.memory() == 1 << 30
    with pytest.raises(TypeError):
        sp.PerfParams.estimate(max_memory=0.5)
    s = sc.io.Input([sp.MemoryStream(list(range(10)))])
    job = sc.run(sc.io.Output(s, [sp.NamedStream(sc, "nums")]), perf, show_progress=False)
    assert list(job[0].load()) == list(range(10))
    assert "nums" in sc.summarize()
    assert isinstance(sc.streams.StridedRanges, object)

    monkeypatch.delitem(kernel._REGISTRY, "Histogram")  # as before `import scanner_nb.imgproc`
    with pytest.raises(sp.ScannerError, match="import scanner_nb.imgproc") as info:
        sc.ops.Histogram
    assert isinstance(info.value, AttributeError) and isinstance(info.value, sp.OpNotFoundError)
    assert not hasattr(sc.ops, "NoSuchOp")


def test_storage_module_names_the_stream_classes():
    from scanner_nb.storage import NamedStream, NamedVideoStream

    assert NamedStream is sp.NamedStream and NamedVideoStream is sp.NamedVideoStream
