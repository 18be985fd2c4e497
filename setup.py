"""The C part of aiosfu: everything else is in pyproject.toml."""

from setuptools import Extension, setup

FLAGS = ["-O2", "-Wall", "-Wextra", "-Wno-missing-field-initializers"]

setup(
    ext_modules=[
        # the forward path's per-copy work (sfu/media/srtp.py says why)
        Extension(
            "sfu.media._packetio",
            [
                "sfu/media/_packetio.c",
                "sfu/media/_transport_cc.c",
                "sfu/media/_pacer.c",
                "sfu/media/_sendbatch.c",
                "sfu/media/_udpread.c",
            ],
            extra_compile_args=FLAGS,
        ),
        # delay-based congestion detection, per packet group of every subscriber's feedback
        Extension("sfu.bwe._delay", ["sfu/bwe/_delay.c"], extra_compile_args=FLAGS),
    ]
)
