# Run at build time (not only at configure time) so the git revision in the kernel cache key
# follows every commit and every uncommitted change. configure_file rewrites the header only
# when its text changes, so an unchanged revision rebuilds nothing.
execute_process(COMMAND git -C "${SOURCE_DIR}" rev-parse --short=12 HEAD
                OUTPUT_VARIABLE revision OUTPUT_STRIP_TRAILING_WHITESPACE
                RESULT_VARIABLE status ERROR_QUIET)
if(NOT status EQUAL 0 OR revision STREQUAL "")
  set(revision "unknown")
else()
  # A dirty tree gets the hash of its diff, so two different uncommitted states differ too.
  execute_process(COMMAND git -C "${SOURCE_DIR}" diff HEAD -- dialects passes codegen runtime
                  OUTPUT_VARIABLE diff ERROR_QUIET)
  if(NOT diff STREQUAL "")
    string(SHA256 diffHash "${diff}")
    string(SUBSTRING "${diffHash}" 0 12 diffHash)
    set(revision "${revision}-dirty-${diffHash}")
  endif()
endif()
set(ATTN_GIT_REVISION "${revision}")
configure_file("${SOURCE_DIR}/runtime/BuildIdGenerated.h.in" "${OUTPUT}" @ONLY)
