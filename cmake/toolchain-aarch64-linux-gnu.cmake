# toolchain-aarch64-linux-gnu.cmake — cross-build fieldbridge for arm64 (Raspberry Pi 3/4/5, Revolution Pi Connect 4/Core S/SE with a 64-bit OS)
# with Debian's cross compiler (gcc-aarch64-linux-gnu) and the multiarch -dev packages
# (libmosquitto-dev:arm64 ...): scripts/cross.sh installs both and uses this file:
#   cmake -S . -B build-arm64 -G Ninja -DCMAKE_TOOLCHAIN_FILE=cmake/toolchain-aarch64-linux-gnu.cmake
# Tests run under qemu-user (qemu-aarch64 -L /usr/aarch64-linux-gnu): ctest uses it as the emulator.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(FB_CROSS_TRIPLE aarch64-linux-gnu)
set(CMAKE_C_COMPILER ${FB_CROSS_TRIPLE}-gcc)
# Debian multiarch: the target's libraries are in /usr/lib/<triple> (the compiler
# knows it, CMake searches there by CMAKE_LIBRARY_ARCHITECTURE), the headers in
# /usr/include and /usr/include/<triple>; no sysroot.  protoc-c is the host's.
# pkg-config: the target's .pc files (multiarch paths), never the host's
set(ENV{PKG_CONFIG_LIBDIR} "/usr/lib/${FB_CROSS_TRIPLE}/pkgconfig:/usr/share/pkgconfig")
set(ENV{PKG_CONFIG_PATH} "")
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64 -L /usr/${FB_CROSS_TRIPLE})
