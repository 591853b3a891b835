# Cross build for the aarch64 boards of targets/boards (rpi4, rpi5, jetson-*, qemu-aarch64):
#   cmake -S . -B build-aarch64 -DCMAKE_TOOLCHAIN_FILE=targets/toolchains/aarch64-linux-gnu.cmake
# Needs: apt-get install g++-aarch64-linux-gnu
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
# Debian's multiarch cross libraries; libraries given by full path need no search here.
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
# gcc 12 for aarch64 can hit an internal compiler error on vectorized reductions at -O2.
set(CMAKE_CXX_FLAGS_INIT "-fno-tree-vectorize")
