#include "models/train/Config.h"

#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace attn::train {

std::string normaliseKey(const std::string &key) {
  std::string out = key;
  std::replace(out.begin(), out.end(), '_', '-');
  return out;
}

static bool endsWith(const std::string &s, const std::string &suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

static std::string jsonScalar(const nlohmann::json &value, const std::string &key,
                              const std::string &path) {
  if (value.is_string())
    return value.get<std::string>();
  if (value.is_boolean())
    return value.get<bool>() ? "true" : "false";
  if (value.is_number_integer())
    return std::to_string(value.get<int64_t>());
  if (value.is_number())
    return value.dump();
  throw UsageError(path + ": key '" + key + "' must be a scalar (the config is a flat mapping)");
}

Config Config::fromFile(const std::string &path) {
  std::ifstream in(path);
  if (!in)
    throw UsageError("cannot read config file '" + path + "'");
  Config config;
  if (endsWith(path, ".json")) {
    nlohmann::json root;
    try {
      in >> root;
    } catch (const nlohmann::json::exception &e) {
      throw UsageError(path + ": invalid JSON: " + e.what());
    }
    if (!root.is_object())
      throw UsageError(path + ": expected a JSON object of option: value");
    for (auto &[key, value] : root.items())
      config.set(key, jsonScalar(value, key, path));
  } else if (endsWith(path, ".yaml") || endsWith(path, ".yml")) {
    YAML::Node root;
    try {
      root = YAML::LoadFile(path);
    } catch (const YAML::Exception &e) {
      throw UsageError(path + ": invalid YAML: " + e.what());
    }
    if (!root.IsMap())
      throw UsageError(path + ": expected a YAML mapping of option: value");
    for (const auto &entry : root) {
      auto key = entry.first.as<std::string>();
      if (!entry.second.IsScalar())
        throw UsageError(path + ": key '" + key + "' must be a scalar (the config is a flat mapping)");
      config.set(key, entry.second.as<std::string>());
    }
  } else {
    throw UsageError("config file '" + path + "' must end in .yaml, .yml or .json");
  }
  return config;
}

Config Config::fromArgs(const std::vector<std::string> &args) {
  Config config;
  std::vector<std::pair<std::string, std::string>> flags;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string &arg = args[i];
    if (arg.rfind("--", 0) != 0 || arg.size() == 2)
      throw UsageError("unexpected argument '" + arg + "' (options are --key=value)");
    std::string body = arg.substr(2), key = body, value = "true";
    if (auto eq = body.find('='); eq != std::string::npos) {
      key = body.substr(0, eq);
      value = body.substr(eq + 1);
    } else if (normaliseKey(key) == "config") {
      if (i + 1 >= args.size())
        throw UsageError("--config needs a file");
      value = args[++i];
    }
    if (normaliseKey(key) == "config")
      config = fromFile(value);
    else
      flags.emplace_back(key, value);
  }
  for (auto &[key, value] : flags)
    config.set(key, value);
  return config;
}

void Config::set(const std::string &key, const std::string &value) {
  given_[normaliseKey(key)] = value;
}

bool Config::has(const std::string &key) const { return given_.count(normaliseKey(key)) != 0; }

std::string Config::declare(const std::string &key, const std::string &fallback,
                            const std::string &help) {
  std::string name = normaliseKey(key);
  if (!declared_.count(name))
    order_.push_back(name);
  auto it = given_.find(name);
  std::string value = it == given_.end() ? fallback : it->second;
  declared_[name] = {fallback, help, value};
  return value;
}

std::string Config::getString(const std::string &key, const std::string &fallback,
                              const std::string &help) {
  return declare(key, fallback, help);
}

int64_t Config::getInt(const std::string &key, int64_t fallback, const std::string &help) {
  std::string text = declare(key, std::to_string(fallback), help);
  errno = 0;
  char *end = nullptr;
  long long value = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno == ERANGE)
    throw UsageError("--" + normaliseKey(key) + ": expected an integer, got '" + text + "'");
  return value;
}

double Config::getDouble(const std::string &key, double fallback, const std::string &help) {
  std::ostringstream fallbackText;
  fallbackText << fallback;
  std::string text = declare(key, fallbackText.str(), help);
  errno = 0;
  char *end = nullptr;
  double value = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || errno == ERANGE)
    throw UsageError("--" + normaliseKey(key) + ": expected a number, got '" + text + "'");
  return value;
}

bool Config::getBool(const std::string &key, bool fallback, const std::string &help) {
  std::string text = declare(key, fallback ? "true" : "false", help);
  if (text == "true" || text == "1" || text == "yes" || text == "on")
    return true;
  if (text == "false" || text == "0" || text == "no" || text == "off")
    return false;
  throw UsageError("--" + normaliseKey(key) + ": expected true or false, got '" + text + "'");
}

std::string Config::getChoice(const std::string &key, const std::string &fallback,
                              const std::vector<std::string> &choices, const std::string &help) {
  std::string joined;
  for (const auto &choice : choices)
    joined += (joined.empty() ? "" : "|") + choice;
  std::string value = declare(key, fallback, help + " (" + joined + ")");
  if (std::find(choices.begin(), choices.end(), value) == choices.end())
    throw UsageError("--" + normaliseKey(key) + ": expected one of " + joined + ", got '" +
                     value + "'");
  return value;
}

void Config::rejectUnknown(const std::string &recipe) const {
  std::vector<std::string> unknown;
  for (const auto &[key, value] : given_)
    if (!declared_.count(key))
      unknown.push_back(key);
  if (unknown.empty())
    return;
  std::string message = "unknown option" + std::string(unknown.size() > 1 ? "s" : "") + " for " +
                        recipe + ":";
  for (const auto &key : unknown)
    message += " --" + key;
  message += " (`attn-train " + recipe + " --help` lists the options)";
  throw UsageError(message);
}

std::string Config::help() const {
  std::ostringstream out;
  for (const auto &name : order_) {
    const Declared &d = declared_.at(name);
    out << "  --" << name << " (default: " << (d.fallback.empty() ? "\"\"" : d.fallback) << ")\n      "
        << d.help << "\n";
  }
  return out.str();
}

std::string Config::resolvedJson() const {
  nlohmann::json out = nlohmann::json::object();
  for (const auto &name : order_)
    out[name] = declared_.at(name).value;
  return out.dump(2);
}

} // namespace attn::train
