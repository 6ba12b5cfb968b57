# FindNCCL
# --------
# Finds NCCL and creates the imported target ``NCCL::nccl``.
#
# Searched, in order: ``NCCL_ROOT`` (variable or environment), the CUDA toolkit folder, and the
# layout of NVIDIA's Python wheels (``site-packages/nvidia/nccl/{include,lib}``, where the library
# carries only its versioned name ``libnccl.so.2``).
#
# Result variables: NCCL_FOUND, NCCL_VERSION, NCCL_VERSION_MAJOR/MINOR/PATCH, NCCL_INCLUDE_DIR,
# NCCL_LIBRARY.

include(${CMAKE_CURRENT_LIST_DIR}/KilnFindHelpers.cmake)
kiln_wheel_hints(nccl _nccl_wheel_dirs)

set(_nccl_hints ${NCCL_ROOT} $ENV{NCCL_ROOT} ${CUDAToolkit_LIBRARY_ROOT} ${CUDAToolkit_TARGET_DIR}
                ${_nccl_wheel_dirs})

find_path(NCCL_INCLUDE_DIR nccl.h
  HINTS ${_nccl_hints} ${CUDAToolkit_INCLUDE_DIRS}
  PATH_SUFFIXES include)
find_library(NCCL_LIBRARY
  NAMES nccl libnccl.so.2
  HINTS ${_nccl_hints} ${CUDAToolkit_LIBRARY_DIR}
  PATH_SUFFIXES lib64 lib)

if(NCCL_INCLUDE_DIR AND EXISTS "${NCCL_INCLUDE_DIR}/nccl.h")
  kiln_parse_version_header("${NCCL_INCLUDE_DIR}/nccl.h" NCCL_MAJOR NCCL_MINOR NCCL_PATCH
                            NCCL_VERSION)
  set(NCCL_VERSION_MAJOR ${NCCL_MAJOR_VALUE})
  set(NCCL_VERSION_MINOR ${NCCL_MINOR_VALUE})
  set(NCCL_VERSION_PATCH ${NCCL_PATCH_VALUE})
endif()

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(NCCL
  REQUIRED_VARS NCCL_LIBRARY NCCL_INCLUDE_DIR
  VERSION_VAR NCCL_VERSION)

if(NCCL_FOUND AND NOT TARGET NCCL::nccl)
  add_library(NCCL::nccl SHARED IMPORTED)
  set_target_properties(NCCL::nccl PROPERTIES
    IMPORTED_LOCATION "${NCCL_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${NCCL_INCLUDE_DIR}")
endif()
mark_as_advanced(NCCL_INCLUDE_DIR NCCL_LIBRARY)
