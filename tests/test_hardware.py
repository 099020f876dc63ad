"""Device choice and speed settings, decided on mocked capabilities so every rule is tested on any machine."""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path

import pytest
import torch
from conftest import run_python

from nst_exp import hardware
from nst_exp.errors import NstError
from nst_exp.hardware import Capabilities, SpeedChoice, choose_speed, describe_device, detect, pick_device, sweep_device

CPU = torch.device("cpu")
AMX_CPU = detect(CPU, frozenset({"avx2", "avx512_f", "avx512_bf16", "amx_tile", "amx_bf16"}))
AVX512_BF16_CPU = detect(CPU, frozenset({"avx2", "avx512_f", "avx512_bf16"}))
ZEN_CPU = detect(CPU, frozenset({"avx2", "fma"}))
MPS = detect(torch.device("mps"))


def cuda_caps(monkeypatch, capability: tuple[int, int]) -> Capabilities:
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    return detect(torch.device("cuda"))


class Precision(Enum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"


# detect


def test_detect_reads_bf16_instructions_from_cpu_flags():
    assert AMX_CPU == Capabilities("cpu", True, "this CPU has AMX-BF16", fp32_channels_last=True)
    assert AVX512_BF16_CPU == Capabilities("cpu", True, "this CPU has AVX512-BF16", fp32_channels_last=False)
    assert not ZEN_CPU.native_bf16 and "neither AMX-BF16 nor AVX512-BF16" in ZEN_CPU.why and "emulated" in ZEN_CPU.why


def test_detect_reads_cuda_compute_capability(monkeypatch):
    assert cuda_caps(monkeypatch, (9, 0)) == Capabilities("cuda", True, "CUDA compute capability 9.0")
    assert cuda_caps(monkeypatch, (8, 0)).native_bf16
    turing = cuda_caps(monkeypatch, (7, 5))
    assert not turing.native_bf16 and turing.why.startswith("CUDA compute capability 7.5")


def test_mps_has_no_native_bf16_for_auto():
    assert MPS.device_type == "mps" and not MPS.native_bf16


def test_cpu_flags_from_cpuinfo_where_torch_has_no_capabilities(monkeypatch, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n"
        "flags\t\t: fpu avx2 avx512_bf16 amx_bf16 amx_tile\n\n"
        "processor\t: 1\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: fpu\n"
    )
    monkeypatch.setattr(hardware, "CPUINFO", cpuinfo)
    monkeypatch.delattr(torch.cpu, "get_capabilities")
    assert hardware.cpu_flags() == {"fpu", "avx2", "avx512_bf16", "amx_bf16", "amx_tile"}
    assert detect(CPU) == Capabilities("cpu", True, "this CPU has AMX-BF16", fp32_channels_last=True)


def test_cpu_flags_empty_without_torch_capabilities_or_cpuinfo(monkeypatch, tmp_path):
    monkeypatch.setattr(hardware, "CPUINFO", tmp_path / "missing")
    monkeypatch.delattr(torch.cpu, "get_capabilities")
    assert hardware.cpu_flags() == frozenset()
    assert not detect(CPU).native_bf16


# choose_speed: auto


@pytest.mark.parametrize(
    "caps, instructions", [(AMX_CPU, "AMX-BF16"), (AVX512_BF16_CPU, "AVX512-BF16")], ids=["amx", "avx512_bf16"]
)
def test_auto_picks_bf16_and_channels_last_on_cpus_with_bf16_instructions(caps, instructions):
    expected = SpeedChoice("bf16", True, f"bf16 + channels_last: this CPU has {instructions}")
    assert choose_speed("auto", "auto", caps) == expected


def test_auto_keeps_fp32_without_channels_last_on_a_cpu_without_bf16():
    choice = choose_speed("auto", "auto", ZEN_CPU)
    assert (choice.precision_used, choice.channels_last_used) == ("fp32", False)
    assert choice.reason.startswith("fp32: this CPU has neither AMX-BF16 nor AVX512-BF16")
    assert "21 times slower" in choice.reason


def test_auto_picks_bf16_from_compute_capability_8_0(monkeypatch):
    choice = choose_speed("auto", "auto", cuda_caps(monkeypatch, (8, 0)))
    assert choice == SpeedChoice("bf16", True, "bf16 + channels_last: CUDA compute capability 8.0")


def test_auto_keeps_fp32_below_compute_capability_8_0(monkeypatch):
    choice = choose_speed("auto", "auto", cuda_caps(monkeypatch, (7, 5)))
    assert (choice.precision_used, choice.channels_last_used) == ("fp32", False)
    assert "compute capability 7.5" in choice.reason and "need 8.0" in choice.reason


def test_auto_keeps_fp32_on_mps():
    choice = choose_speed("auto", "auto", MPS)
    assert (choice.precision_used, choice.channels_last_used) == ("fp32", False)
    assert "MPS" in choice.reason


# choose_speed: explicit settings


@pytest.mark.parametrize("caps", [AMX_CPU, AVX512_BF16_CPU, ZEN_CPU, MPS], ids=["amx", "avx512_bf16", "zen", "mps"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_explicit_precision_is_kept(caps, precision):
    choice = choose_speed(precision, "auto", caps)
    assert choice.precision_used == precision
    assert choice.channels_last_used == (precision == "bf16" or caps is AMX_CPU)
    assert choice.reason.startswith(f"{precision} (as asked)") and caps.why in choice.reason


def test_fp32_on_a_cpu_with_amx_runs_channels_last():
    """oneDNN's fp32 convolutions run faster NHWC there (docs/speed.md); on other CPUs NCHW stays."""
    assert choose_speed("fp32", "auto", AMX_CPU) == SpeedChoice(
        "fp32", True, "fp32 (as asked) + channels_last: this CPU has AMX-BF16"
    )
    assert not choose_speed("fp32", "auto", AVX512_BF16_CPU).channels_last_used
    assert not choose_speed("fp32", "auto", ZEN_CPU).channels_last_used
    assert not choose_speed("fp32", "false", AMX_CPU).channels_last_used


def test_explicit_bf16_on_a_cpu_without_it_says_it_is_emulated():
    assert "emulated" in choose_speed("bf16", "auto", ZEN_CPU).reason


@pytest.mark.parametrize("caps", [AMX_CPU, ZEN_CPU], ids=["amx", "zen"])
@pytest.mark.parametrize("precision", ["auto", "fp32", "bf16"])
@pytest.mark.parametrize("channels_last", [True, False, "true", "false"])
def test_explicit_channels_last_is_kept(caps, precision, channels_last):
    assert choose_speed(precision, channels_last, caps).channels_last_used == (channels_last in (True, "true"))


def test_explicit_channels_last_off_with_bf16_is_said():
    assert choose_speed("auto", False, AMX_CPU).reason == "bf16, channels_last off (as asked): this CPU has AMX-BF16"


def test_tf32_is_kept_on_cuda(monkeypatch):
    assert choose_speed("tf32", "auto", cuda_caps(monkeypatch, (9, 0))) == SpeedChoice(
        "tf32", False, "tf32 (as asked): CUDA compute capability 9.0"
    )


@pytest.mark.parametrize("caps", [AMX_CPU, MPS], ids=["cpu", "mps"])
def test_tf32_off_cuda_is_an_error_naming_the_fix(caps):
    message = rf"needs a CUDA GPU.*on {caps.device_type}\. Use precision=fp32 or precision=auto"
    with pytest.raises(NstError, match=message):
        choose_speed("tf32", "auto", caps)


def test_enums_are_read_by_value():
    assert choose_speed(Precision.auto, "auto", AMX_CPU).precision_used == "bf16"
    assert choose_speed(Precision.fp32, "auto", AMX_CPU) == choose_speed("fp32", "auto", AMX_CPU)


@pytest.mark.parametrize(
    "precision, channels_last, message",
    [("fp16", "auto", "precision='fp16' is not one of auto, fp32, bf16, tf32"),
     ("auto", "yes", "channels_last='yes' is not one of auto, true, false")],
)
def test_unknown_settings_list_the_allowed_values(precision, channels_last, message):
    with pytest.raises(NstError, match=message):
        choose_speed(precision, channels_last, AMX_CPU)


# pick_device


def test_pick_device_cpu_and_auto_without_accelerators(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert pick_device("cpu") == CPU
    assert pick_device("auto") == CPU


def test_pick_device_auto_prefers_cuda_then_mps(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto") == torch.device("cuda")


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "mps"])
def test_unavailable_device_is_an_error_naming_the_fix(monkeypatch, name):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    message = rf"device={name} was asked for but is not available here\. Use device=auto or device=cpu\."
    with pytest.raises(NstError, match=message):
        pick_device(name)


def test_cuda_index_is_parsed_and_checked_against_the_gpu_count(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert pick_device("cuda:1") == torch.device("cuda", 1)
    fix = r"has 2 CUDA GPUs \(cuda:0 to cuda:1\)\. Use device=cuda:0 up to cuda:1, or device=auto"
    with pytest.raises(NstError, match=rf"device=cuda:2 was asked for but this machine {fix}"):
        pick_device("cuda:2")


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "cuda:-1", "CPU"])
def test_unknown_device_lists_the_allowed_values(name):
    with pytest.raises(NstError, match=r"is not one of auto, cpu, cuda, cuda:N, mps"):
        pick_device(name)


# sweep_device


@pytest.mark.parametrize(
    "name, job_num, gpu_count, expected",
    [
        ("auto", 0, 4, "cuda:0"),
        ("cuda", 5, 4, "cuda:1"),
        ("auto", 3, 2, "cuda:1"),
        ("cuda:1", 2, 4, "cuda:1"),  # a named GPU is kept
        ("cpu", 2, 4, "cpu"),
        ("auto", None, 4, "auto"),  # not a sweep job
        ("cuda", 3, 1, "cuda"),  # one GPU: nothing to spread
        ("auto", 3, 0, "auto"),
    ],
)
def test_sweep_device_gives_each_job_its_own_gpu(name, job_num, gpu_count, expected):
    assert sweep_device(name, job_num, gpu_count) == expected


# describe_device


def test_describe_device_on_this_machine():
    description = describe_device(CPU)
    assert description.strip() and description.endswith(")")


def test_describe_device_names_the_cpu_model_and_its_bf16(monkeypatch, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n")
    monkeypatch.setattr(hardware, "CPUINFO", cpuinfo)
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx512_bf16", "amx_bf16"}))
    assert describe_device(CPU).startswith("Intel(R) Xeon(R) Platinum 8480+ (")
    assert describe_device(CPU).endswith(", AMX-BF16)")
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2"}))
    assert describe_device(CPU).endswith(", no native bf16)")


def test_describe_device_falls_back_to_platform_without_cpuinfo(monkeypatch, tmp_path):
    monkeypatch.setattr(hardware, "CPUINFO", tmp_path / "missing")
    monkeypatch.setattr(hardware.platform, "processor", lambda: "")
    monkeypatch.setattr(hardware.platform, "machine", lambda: "arm64")
    assert describe_device(CPU).startswith("arm64 (")


def test_describe_device_names_the_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    assert describe_device(torch.device("cuda", 0)) == "NVIDIA H200"


BLOCKS_MIB = (48, 24, 12, 6, 3)  # an evaluation's feature maps, in size order: allocated, held, freed together


def pages(blocks_mib: tuple[int, ...]) -> int:
    return sum(blocks_mib) * 256  # 4 KiB pages


def faults_of_a_pass(blocks_mib: tuple[int, ...] = BLOCKS_MIB, rounds: int = 1) -> int:
    """Page faults of allocating and filling ``blocks_mib``, then freeing them, ``rounds`` times."""
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds):
        held = [torch.empty(mib << 18).fill_(1.0) for mib in blocks_mib]  # float32: 2^18 elements a MiB
        del held
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def resident_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(hardware._glibc() is None, reason="mallopt is glibc's")
def test_a_cpu_run_keeps_freed_memory_for_its_next_evaluation(monkeypatch):
    """glibc returns freed feature maps to the system and faults them in again; inside, the next pass reuses them.

    On exit the memory goes back to the system.
    """
    for name in hardware.MALLOC_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    faults_of_a_pass()
    assert faults_of_a_pass() > pages(BLOCKS_MIB) / 2
    with hardware.reuse_freed_memory(CPU) as kept:
        assert kept
        faults_of_a_pass(rounds=2)  # the heap grows to hold them
        assert faults_of_a_pass(rounds=5) < pages(BLOCKS_MIB)  # outside: about 5 times that
        holding = resident_mib()
    assert resident_mib() < holding - sum(BLOCKS_MIB) / 2


AFTER_A_RUN = """
import ctypes, resource, torch
from nst_exp import hardware
with hardware.reuse_freed_memory(torch.device("cpu")):
    pass
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
def faults(size=30 << 20):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults()
print(sum(faults() for _ in range(4)))
"""


@pytest.mark.subprocess
@pytest.mark.skipif(hardware._glibc() is None, reason="mallopt is glibc's")
def test_after_a_run_malloc_still_reuses_blocks_up_to_32_mib(tmp_path):
    """mallopt stops glibc's thresholds adapting; a run leaves them where they settle, not at 128 KiB.

    At 128 KiB, every later block above that (all of a network pass's) would be mapped and
    faulted in afresh: a 30 MiB block four times is 30,720 page faults.
    """
    done = run_python("-c", AFTER_A_RUN, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.split()[-1]) < 7680  # under one block's pages


def test_freed_memory_is_left_to_malloc_on_a_gpu_and_where_the_environment_tunes_it(monkeypatch):
    with hardware.reuse_freed_memory(torch.device("cuda")) as kept:
        assert not kept
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "0")
    with hardware.reuse_freed_memory(CPU) as kept:
        assert not kept
