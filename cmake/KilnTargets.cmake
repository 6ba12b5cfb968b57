# The object libraries every kiln source compiles into, and the flags they share. The flags are
# PRIVATE to kiln's own targets: nothing here reaches a project that links kiln::kiln.
include_guard(GLOBAL)

# kiln_warnings(<target>): warnings for C++ and for both halves of CUDA compilation.
function(kiln_warnings target)
  set(cxx_warnings -Wall -Wextra -Wshadow -Wno-unused-parameter)
  string(JOIN "," cuda_host_warnings ${cxx_warnings})
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:${cxx_warnings}>
    $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=${cuda_host_warnings}>)
  if(KILN_WERROR)
    target_compile_options(${target} PRIVATE
      $<$<COMPILE_LANGUAGE:CXX>:-Werror>
      $<$<COMPILE_LANGUAGE:CUDA>:--Werror=all-warnings -Xcompiler=-Werror>)
  endif()
endfunction()

# kiln_cuda_flags(<target>): line info for compute-sanitizer and ncu (no cost in the code), ptxas
# reports of spills and local memory so a slow kernel shows in the build log, relaxed constexpr for
# std:: helpers in device code, and sources named from the project root in error messages.
function(kiln_cuda_flags target)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:-lineinfo --expt-relaxed-constexpr -Xptxas=-warn-spills,-warn-lmem-usage>
    $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-fmacro-prefix-map=${PROJECT_SOURCE_DIR}/=>
    $<$<COMPILE_LANGUAGE:CXX>:-fmacro-prefix-map=${PROJECT_SOURCE_DIR}/=>)
  set_target_properties(${target} PROPERTIES
    POSITION_INDEPENDENT_CODE ON
    CUDA_SEPARABLE_COMPILATION OFF
    CUDA_RUNTIME_LIBRARY Shared
    CXX_VISIBILITY_PRESET hidden
    CUDA_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON)
endfunction()

# All portable sources (kernels/ and runtime/) compile once into kiln_obj; the shared library
# kiln::kiln and the static kiln_static (tests and benchmarks reach internal headers through it)
# are both made of these objects.
add_library(kiln_obj OBJECT)
target_include_directories(kiln_obj
  PUBLIC
    $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/kernels/include>
    $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/runtime/include>
    $<BUILD_INTERFACE:${PROJECT_BINARY_DIR}/generated/include>
  PRIVATE
    ${PROJECT_SOURCE_DIR})
target_link_libraries(kiln_obj
  PUBLIC CUDA::cudart
  PRIVATE CUDA::cublasLt CUDNN::cudnn NCCL::nccl nlohmann_json::nlohmann_json Threads::Threads)
target_compile_definitions(kiln_obj PRIVATE KILN_BUILDING_LIBRARY)
kiln_warnings(kiln_obj)
kiln_cuda_flags(kiln_obj)

# kiln_hopper_library(<sources>): the Hopper-only kernels (files named *_sm90.cu) compile into
# kiln_sm90 for sm_90a alone, since wgmma and setmaxnreg exist only there.
function(kiln_hopper_library)
  add_library(kiln_sm90 OBJECT ${ARGN})
  set_target_properties(kiln_sm90 PROPERTIES CUDA_ARCHITECTURES 90a)
  target_include_directories(kiln_sm90 PRIVATE ${PROJECT_SOURCE_DIR}
    ${PROJECT_SOURCE_DIR}/kernels/include ${PROJECT_SOURCE_DIR}/runtime/include
    ${PROJECT_BINARY_DIR}/generated/include)
  # Only cudart: the TMA descriptor encoder comes from the driver through
  # cudaGetDriverEntryPointByVersion, so nothing links libcuda and programs still start where there
  # is no driver.
  target_link_libraries(kiln_sm90 PRIVATE CUDA::cudart)
  target_compile_definitions(kiln_sm90 PRIVATE KILN_BUILDING_LIBRARY KILN_HAS_SM90A=1)
  kiln_warnings(kiln_sm90)
  kiln_cuda_flags(kiln_sm90)
endfunction()
