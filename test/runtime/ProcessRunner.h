// Runs a child process with extra environment variables and captures its output: the cache
// tests observe the runtime across process restarts and between racing processes.
#ifndef TEST_RUNTIME_PROCESSRUNNER_H
#define TEST_RUNTIME_PROCESSRUNNER_H

#include <map>
#include <string>
#include <vector>

namespace attn::test {
struct ProcessResult {
  int exitCode = -1;
  std::string out;
  std::string err;
};

struct ProcessSpec {
  std::vector<std::string> argv;
  std::map<std::string, std::string> environment; ///< added to (and overriding) ours
};

/// A started child process: wait() collects its exit code and output; kill() signals it. A
/// child that was never waited for is killed (SIGKILL) and reaped on destruction.
class ChildProcess {
public:
  explicit ChildProcess(const ProcessSpec &process);
  ~ChildProcess();
  ChildProcess(const ChildProcess &) = delete;
  ChildProcess &operator=(const ChildProcess &) = delete;
  int pid() const { return pid_; }
  void kill(int signal);
  ProcessResult wait();

private:
  int pid_ = -1;
  bool waited_ = false;
  std::string outPath_, errPath_;
};

/// Starts every process, then waits for all: they run concurrently.
std::vector<ProcessResult> runConcurrently(const std::vector<ProcessSpec> &processes);
ProcessResult run(const ProcessSpec &process);

/// What attn-cache-probe (test/runtime/CacheProbe.cpp) reports on its last line: the Jit's
/// counters and whether its output matched float64. -1 / false when the line is missing.
struct ProbeCounts {
  int compiles = -1, diskHits = -1;
  bool outputOk = false;
};
ProbeCounts parseProbe(const ProcessResult &result);

/// A fresh empty directory under $TMPDIR (or /tmp), removed with its contents on destruction.
class TemporaryDirectory {
public:
  TemporaryDirectory();
  ~TemporaryDirectory();
  const std::string &path() const { return path_; }
  std::vector<std::string> list() const;

private:
  std::string path_;
};
} // namespace attn::test

#endif // TEST_RUNTIME_PROCESSRUNNER_H
