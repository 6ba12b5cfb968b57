# FindCUDNN
# ---------
# Finds cuDNN 9 (the graph API) and creates the imported target ``CUDNN::cudnn``.
#
# Searched, in order: ``CUDNN_ROOT`` (variable or environment), the CUDA toolkit folder, and the
# layout of NVIDIA's Python wheels (``site-packages/nvidia/cudnn/{include,lib}``, where the
# libraries carry only their versioned names such as ``libcudnn.so.9``).
#
# Result variables: CUDNN_FOUND, CUDNN_VERSION, CUDNN_VERSION_MAJOR/MINOR/PATCH,
# CUDNN_INCLUDE_DIR, CUDNN_LIBRARY.

include(${CMAKE_CURRENT_LIST_DIR}/KilnFindHelpers.cmake)
kiln_wheel_hints(cudnn _cudnn_wheel_dirs)

set(_cudnn_hints ${CUDNN_ROOT} $ENV{CUDNN_ROOT} ${CUDAToolkit_LIBRARY_ROOT} ${CUDAToolkit_TARGET_DIR}
                 ${_cudnn_wheel_dirs})

find_path(CUDNN_INCLUDE_DIR cudnn_version.h
  HINTS ${_cudnn_hints} ${CUDAToolkit_INCLUDE_DIRS}
  PATH_SUFFIXES include)
find_library(CUDNN_LIBRARY
  NAMES cudnn libcudnn.so.9
  HINTS ${_cudnn_hints} ${CUDAToolkit_LIBRARY_DIR}
  PATH_SUFFIXES lib64 lib lib/x64)

if(CUDNN_INCLUDE_DIR AND EXISTS "${CUDNN_INCLUDE_DIR}/cudnn_version.h")
  kiln_parse_version_header("${CUDNN_INCLUDE_DIR}/cudnn_version.h" CUDNN_MAJOR CUDNN_MINOR
                            CUDNN_PATCHLEVEL CUDNN_VERSION)
  set(CUDNN_VERSION_MAJOR ${CUDNN_MAJOR_VALUE})
  set(CUDNN_VERSION_MINOR ${CUDNN_MINOR_VALUE})
  set(CUDNN_VERSION_PATCH ${CUDNN_PATCHLEVEL_VALUE})
endif()

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(CUDNN
  REQUIRED_VARS CUDNN_LIBRARY CUDNN_INCLUDE_DIR
  VERSION_VAR CUDNN_VERSION)

if(CUDNN_FOUND AND NOT TARGET CUDNN::cudnn)
  add_library(CUDNN::cudnn SHARED IMPORTED)
  set_target_properties(CUDNN::cudnn PROPERTIES
    IMPORTED_LOCATION "${CUDNN_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${CUDNN_INCLUDE_DIR}")
endif()
mark_as_advanced(CUDNN_INCLUDE_DIR CUDNN_LIBRARY)
