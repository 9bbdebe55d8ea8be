# toolchain-arm-linux-gnueabihf.cmake — cross-build fieldbridge for armhf (32-bit Raspberry Pi OS, Revolution Pi Core 3/Connect with Raspbian)
# with Debian's cross compiler (gcc-arm-linux-gnueabihf) and the multiarch -dev packages
# (libmosquitto-dev:armhf ...): scripts/cross.sh installs both and uses this file:
#   cmake -S . -B build-armhf -G Ninja -DCMAKE_TOOLCHAIN_FILE=cmake/toolchain-arm-linux-gnueabihf.cmake
# Tests run under qemu-user (qemu-arm -L /usr/arm-linux-gnueabihf): ctest uses it as the emulator.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR arm)
set(FB_CROSS_TRIPLE arm-linux-gnueabihf)
set(CMAKE_C_COMPILER ${FB_CROSS_TRIPLE}-gcc)
# Debian multiarch: the target's libraries are in /usr/lib/<triple> (the compiler
# knows it, CMake searches there by CMAKE_LIBRARY_ARCHITECTURE), the headers in
# /usr/include and /usr/include/<triple>; no sysroot.  protoc-c is the host's.
# pkg-config: the target's .pc files (multiarch paths), never the host's
set(ENV{PKG_CONFIG_LIBDIR} "/usr/lib/${FB_CROSS_TRIPLE}/pkgconfig:/usr/share/pkgconfig")
set(ENV{PKG_CONFIG_PATH} "")
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-arm -L /usr/${FB_CROSS_TRIPLE})
