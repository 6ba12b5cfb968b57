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

# kiln_object_library(<name> [sources...]): an object library of kiln's own portable sources, with
# the flags they share and kiln's headers (public) and the project root (private) on the include
# path. Its objects go into kiln::kiln and kiln_static (KilnLibrary.cmake).
function(kiln_object_library name)
  add_library(${name} OBJECT ${ARGN})
  target_include_directories(${name}
    PUBLIC
      $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/kernels/include>
      $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/runtime/include>
      $<BUILD_INTERFACE:${PROJECT_BINARY_DIR}/generated/include>
    PRIVATE
      ${PROJECT_SOURCE_DIR})
  target_link_libraries(${name} PUBLIC CUDA::cudart)
  target_compile_definitions(${name} PRIVATE KILN_BUILDING_LIBRARY)
  kiln_warnings(${name})
  kiln_cuda_flags(${name})
endfunction()

# The portable sources of kernels/ and runtime/ compile once into these object libraries; the
# shared library kiln::kiln and the static kiln_static (tests and benchmarks reach internal headers
# through it) are both made of their objects.
#   kiln_errors  the error contract (errors/): kiln::Error, the checks, the C ABI guard; created
#                in errors/CMakeLists.txt, used by everything below
#   kiln_refs    the CPU references (kernels/*/*_ref.cpp): the specification of every op, and by
#                design the implementation of the runtime's cpu backend (runtime/backend_cpu.cpp)
#   kiln_obj     everything else: the kernels, their launchers and C ABI, the runtime
kiln_object_library(kiln_refs)
kiln_object_library(kiln_obj)
target_link_libraries(kiln_refs PRIVATE kiln_errors)
target_link_libraries(kiln_obj
  PRIVATE kiln_errors CUDA::cublasLt CUDNN::cudnn NCCL::nccl nlohmann_json::nlohmann_json
          Threads::Threads)

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
  target_link_libraries(kiln_sm90 PRIVATE kiln_errors CUDA::cudart)
  target_compile_definitions(kiln_sm90 PRIVATE KILN_BUILDING_LIBRARY KILN_HAS_SM90A=1)
  kiln_warnings(kiln_sm90)
  kiln_cuda_flags(kiln_sm90)
endfunction()
