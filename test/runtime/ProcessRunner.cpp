#include "test/runtime/ProcessRunner.h"

#include <regex>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdexcept>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

namespace attn::test {
namespace {
std::string readAll(const std::string &path) {
  std::string text;
  if (FILE *file = std::fopen(path.c_str(), "r")) {
    char buffer[4096];
    size_t got;
    while ((got = std::fread(buffer, 1, sizeof buffer, file)) > 0)
      text.append(buffer, got);
    std::fclose(file);
  }
  return text;
}

struct Started {
  pid_t pid;
  std::string outPath, errPath;
};

Started start(const ProcessSpec &process, int index) {
  char outTemplate[] = "/tmp/attn-test-out-XXXXXX";
  char errTemplate[] = "/tmp/attn-test-err-XXXXXX";
  int outFd = mkstemp(outTemplate), errFd = mkstemp(errTemplate);
  if (outFd < 0 || errFd < 0)
    throw std::runtime_error("mkstemp failed");
  (void)index;
  pid_t pid = fork();
  if (pid < 0)
    throw std::runtime_error("fork failed");
  if (pid == 0) {
    dup2(outFd, 1);
    dup2(errFd, 2);
    for (const auto &[name, value] : process.environment)
      setenv(name.c_str(), value.c_str(), 1);
    std::vector<char *> argv;
    for (const std::string &argument : process.argv)
      argv.push_back(const_cast<char *>(argument.c_str()));
    argv.push_back(nullptr);
    execve(argv[0], argv.data(), environ);
    _exit(127);
  }
  close(outFd);
  close(errFd);
  return {pid, outTemplate, errTemplate};
}

ProcessResult finish(const Started &child) {
  int status = 0;
  while (waitpid(child.pid, &status, 0) < 0 && errno == EINTR) {
  }
  ProcessResult result;
  result.exitCode = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  result.out = readAll(child.outPath);
  result.err = readAll(child.errPath);
  unlink(child.outPath.c_str());
  unlink(child.errPath.c_str());
  return result;
}
} // namespace

ChildProcess::ChildProcess(const ProcessSpec &process) {
  Started started = start(process, 0);
  pid_ = started.pid;
  outPath_ = started.outPath;
  errPath_ = started.errPath;
}

ChildProcess::~ChildProcess() {
  if (!waited_) {
    ::kill(pid_, SIGKILL);
    wait();
  }
}

void ChildProcess::kill(int signal) {
  if (!waited_)
    ::kill(pid_, signal);
}

ProcessResult ChildProcess::wait() {
  waited_ = true;
  return finish({pid_, outPath_, errPath_});
}

std::vector<ProcessResult> runConcurrently(const std::vector<ProcessSpec> &processes) {
  std::vector<Started> started;
  for (size_t i = 0; i < processes.size(); ++i)
    started.push_back(start(processes[i], static_cast<int>(i)));
  std::vector<ProcessResult> results;
  for (const Started &child : started)
    results.push_back(finish(child));
  return results;
}

ProcessResult run(const ProcessSpec &process) { return runConcurrently({process}).front(); }

TemporaryDirectory::TemporaryDirectory() {
  const char *base = std::getenv("TMPDIR");
  std::string pattern = std::string(base && *base ? base : "/tmp") + "/attn-cache-test-XXXXXX";
  if (!mkdtemp(pattern.data()))
    throw std::runtime_error("mkdtemp failed");
  path_ = pattern;
}

TemporaryDirectory::~TemporaryDirectory() {
  nftw(
      path_.c_str(),
      [](const char *path, const struct stat *, int, struct FTW *) { return ::remove(path); }, 16,
      FTW_DEPTH | FTW_PHYS);
}

std::vector<std::string> TemporaryDirectory::list() const {
  std::vector<std::string> names;
  if (DIR *directory = opendir(path_.c_str())) {
    while (dirent *entry = readdir(directory)) {
      std::string name = entry->d_name;
      if (name != "." && name != "..")
        names.push_back(name);
    }
    closedir(directory);
  }
  return names;
}
ProbeCounts parseProbe(const ProcessResult &result) {
  ProbeCounts counts;
  std::smatch match;
  static const std::regex pattern(R"(compiles=(\d+) disk_hits=(\d+) memory_hits=\d+ output=(\w+))");
  if (std::regex_search(result.out, match, pattern)) {
    counts.compiles = std::stoi(match[1]);
    counts.diskHits = std::stoi(match[2]);
    counts.outputOk = match[3] == "ok";
  }
  return counts;
}
} // namespace attn::test
