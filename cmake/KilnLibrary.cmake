# kiln::kiln (shared, installed, exported) and kiln_static (same objects; for tests and benchmarks,
# which reach internal headers), plus the install rules and the package config.
include_guard(GLOBAL)

set(_kiln_objects $<TARGET_OBJECTS:kiln_errors> $<TARGET_OBJECTS:kiln_refs>
                  $<TARGET_OBJECTS:kiln_obj>)
if(TARGET kiln_sm90)
  list(APPEND _kiln_objects $<TARGET_OBJECTS:kiln_sm90>)
endif()

add_library(kiln SHARED ${_kiln_objects})
add_library(kiln::kiln ALIAS kiln)
add_library(kiln_static STATIC ${_kiln_objects})

foreach(t kiln kiln_static)
  target_include_directories(${t} PUBLIC
    $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/kernels/include>
    $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/runtime/include>
    $<BUILD_INTERFACE:${PROJECT_BINARY_DIR}/generated/include>
    $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
  target_link_libraries(${t}
    PUBLIC CUDA::cudart
    PRIVATE CUDA::cublasLt CUDNN::cudnn NCCL::nccl Threads::Threads)
  set_target_properties(${t} PROPERTIES
    LINKER_LANGUAGE CXX
    CUDA_RESOLVE_DEVICE_SYMBOLS OFF
    CUDA_RUNTIME_LIBRARY Shared
    OUTPUT_NAME kiln)
endforeach()
# Tests and benchmarks see the library's internals from the project root.
target_include_directories(kiln_static PUBLIC $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}>)
set_target_properties(kiln PROPERTIES
  VERSION ${PROJECT_VERSION}
  SOVERSION ${PROJECT_VERSION_MAJOR}.${PROJECT_VERSION_MINOR}
  # Installed, the library finds cuDNN / NCCL / cuBLAS where it was linked against them.
  INSTALL_RPATH_USE_LINK_PATH ON)
set_target_properties(kiln_static PROPERTIES OUTPUT_NAME kiln_static)

# --- install and package config --------------------------------------------------------------
install(TARGETS kiln EXPORT kilnTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/kernels/include/kiln ${PROJECT_SOURCE_DIR}/runtime/include/kiln
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} FILES_MATCHING PATTERN "*.h" PATTERN "*.hpp")
install(FILES ${PROJECT_BINARY_DIR}/generated/include/kiln/version.h
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/kiln)
install(EXPORT kilnTargets NAMESPACE kiln:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/kiln)

configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/kilnConfig.cmake.in
  ${PROJECT_BINARY_DIR}/kilnConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/kiln)
# 0.x: a minor release may change the API, so only the same minor version is compatible.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/kilnConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/kilnConfig.cmake ${PROJECT_BINARY_DIR}/kilnConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/kiln)
