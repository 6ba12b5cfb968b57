# Helpers shared by FindCUDNN.cmake and FindNCCL.cmake.
include_guard(GLOBAL)

# kiln_wheel_hints(<component> <out-var>)
# Folders where NVIDIA's Python wheels put <component> (nvidia/<component>): the site-packages of
# the python3 on PATH (asked directly), plus the usual virtual-environment and system locations.
function(kiln_wheel_hints component out_var)
  set(dirs "")
  find_program(_kiln_python3 NAMES python3)
  if(_kiln_python3)
    execute_process(
      COMMAND "${_kiln_python3}" -c
        "import importlib.util as u, os; s = u.find_spec('nvidia.${component}'); print(list(s.submodule_search_locations)[0] if s else '')"
      OUTPUT_VARIABLE wheel_dir OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE rc)
    if(rc EQUAL 0 AND wheel_dir)
      list(APPEND dirs "${wheel_dir}")
    endif()
  endif()
  file(GLOB globbed LIST_DIRECTORIES true
    "/opt/*/.venv/lib/python3*/site-packages/nvidia/${component}"
    "/usr/local/lib/python3*/dist-packages/nvidia/${component}"
    "/usr/lib/python3/dist-packages/nvidia/${component}"
    "$ENV{VIRTUAL_ENV}/lib/python3*/site-packages/nvidia/${component}")
  list(APPEND dirs ${globbed})
  set(${out_var} ${dirs} PARENT_SCOPE)
endfunction()

# kiln_parse_version_header(<header> <MAJOR-macro> <MINOR-macro> <PATCH-macro> <out-version>)
# Reads `#define <macro> <number>` lines; sets <macro>_VALUE for each and <out-version> = M.m.p.
function(kiln_parse_version_header header major_macro minor_macro patch_macro out_version)
  file(STRINGS "${header}" lines REGEX "^#define[ \t]+(${major_macro}|${minor_macro}|${patch_macro})[ \t]+[0-9]+")
  foreach(macro ${major_macro} ${minor_macro} ${patch_macro})
    set(value "")
    foreach(line ${lines})
      if(line MATCHES "^#define[ \t]+${macro}[ \t]+([0-9]+)")
        set(value ${CMAKE_MATCH_1})
      endif()
    endforeach()
    set(${macro}_VALUE ${value} PARENT_SCOPE)
    set(_${macro} ${value})
  endforeach()
  set(${out_version} "${_${major_macro}}.${_${minor_macro}}.${_${patch_macro}}" PARENT_SCOPE)
endfunction()
