// Options of one attn-train run: `--key=value` flags over an optional YAML/JSON file. A recipe
// declares every option it reads (with its default and help); keys nobody declared are errors.
#ifndef MODELS_TRAIN_CONFIG_H
#define MODELS_TRAIN_CONFIG_H

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace attn::train {

/// A user mistake (unknown key, bad value, missing data): the CLI prints it and exits 2.
class UsageError : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

class Config {
public:
  /// Parses `--config FILE` / `--config=FILE` and `--key=value` (or `--flag` meaning true);
  /// flags override the file. Keys are normalised so `batch_size` and `batch-size` match.
  static Config fromArgs(const std::vector<std::string> &args);
  /// Reads a flat YAML or JSON mapping (by extension; `.yml`, `.yaml`, `.json`).
  static Config fromFile(const std::string &path);

  void set(const std::string &key, const std::string &value);
  bool has(const std::string &key) const;

  std::string getString(const std::string &key, const std::string &fallback,
                        const std::string &help);
  int64_t getInt(const std::string &key, int64_t fallback, const std::string &help);
  double getDouble(const std::string &key, double fallback, const std::string &help);
  bool getBool(const std::string &key, bool fallback, const std::string &help);
  /// One of `choices`, else a UsageError naming them.
  std::string getChoice(const std::string &key, const std::string &fallback,
                        const std::vector<std::string> &choices, const std::string &help);

  /// Throws a UsageError for every key that was given but never declared by a getter.
  void rejectUnknown(const std::string &recipe) const;
  /// `--key (default) help` lines of every declared option.
  std::string help() const;
  /// The resolved value of every declared option, as a flat JSON object (written to the run dir).
  std::string resolvedJson() const;

private:
  struct Declared {
    std::string fallback, help, value;
  };
  std::string declare(const std::string &key, const std::string &fallback,
                      const std::string &help);

  std::map<std::string, std::string> given_;
  std::map<std::string, Declared> declared_;
  std::vector<std::string> order_;
};

/// `batch_size` → `batch-size`.
std::string normaliseKey(const std::string &key);

} // namespace attn::train

#endif // MODELS_TRAIN_CONFIG_H
