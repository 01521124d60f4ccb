# Runs one command and checks how it ended: a helper for the CLI tests of tests/scripted.cmake.
#   cmake -DCOMMAND="prog|arg1|arg2" -DEXIT=<code> -DMATCH=<regex> -P run_expect.cmake
# COMMAND separates arguments with '|' (a ';' list would be split by add_test). MATCH is
# searched in stdout+stderr. A non-zero EXIT also requires the project's error convention:
# nothing on stdout and exactly one line on stderr.
string(REPLACE "|" ";" command "${COMMAND}")
execute_process(COMMAND ${command} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
set(report "command: ${COMMAND}\nexit: ${rc}\nstdout:\n${out}\nstderr:\n${err}")
if(NOT rc STREQUAL "${EXIT}")
  message(FATAL_ERROR "expected exit code ${EXIT}\n${report}")
endif()
if(NOT "${out}${err}" MATCHES "${MATCH}")
  message(FATAL_ERROR "output does not match '${MATCH}'\n${report}")
endif()
if(NOT EXIT STREQUAL "0")
  string(REGEX MATCHALL "\n" newlines "${err}")
  list(LENGTH newlines line_count)
  if(NOT out STREQUAL "" OR NOT line_count EQUAL 1 OR NOT err MATCHES "\n$")
    message(FATAL_ERROR "a failure must print one line on stderr and nothing on stdout\n${report}")
  endif()
endif()
