#include "models/train/Metrics.h"

#include "models/train/Config.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <sstream>

namespace attn::train {
namespace fs = std::filesystem;

static std::string formatValue(double value) {
  char buffer[40];
  std::snprintf(buffer, sizeof buffer, "%.9g", value);
  return buffer;
}

// Keeps the header and the rows whose first field (the step) is <= lastStep.
static std::vector<std::string> keptLines(const std::string &path, int64_t lastStep, bool csv) {
  std::vector<std::string> lines;
  std::ifstream in(path);
  std::string line;
  bool first = true;
  while (std::getline(in, line)) {
    if (line.empty())
      continue;
    if (csv && first) {
      first = false;
      continue; // the header is rewritten
    }
    int64_t step = csv ? std::atoll(line.c_str())
                       : nlohmann::json::parse(line).value("step", int64_t(0));
    if (step <= lastStep)
      lines.push_back(line);
  }
  return lines;
}

MetricsLog::MetricsLog(const std::string &dir, std::vector<std::string> columns,
                       std::optional<int64_t> resumeStep)
    : csvPath_(dir + "/metrics.csv"), jsonlPath_(dir + "/metrics.jsonl"),
      columns_(std::move(columns)) {
  fs::create_directories(dir);
  std::vector<std::string> csvRows, jsonRows;
  if (resumeStep) {
    csvRows = keptLines(csvPath_, *resumeStep, true);
    jsonRows = keptLines(jsonlPath_, *resumeStep, false);
  }
  csv_.open(csvPath_, std::ios::trunc);
  jsonl_.open(jsonlPath_, std::ios::trunc);
  if (!csv_ || !jsonl_)
    throw UsageError("cannot write metrics into '" + dir + "'");
  csv_ << "step";
  for (const auto &column : columns_)
    csv_ << "," << column;
  csv_ << "\n";
  for (const auto &row : csvRows)
    csv_ << row << "\n";
  for (const auto &row : jsonRows)
    jsonl_ << row << "\n";
  csv_.flush();
  jsonl_.flush();
}

void MetricsLog::write(int64_t step, const std::map<std::string, double> &values) {
  nlohmann::json row = nlohmann::json::object();
  row["step"] = step;
  csv_ << step;
  for (const auto &column : columns_) {
    csv_ << ",";
    auto it = values.find(column);
    if (it == values.end() || !std::isfinite(it->second))
      continue;
    csv_ << formatValue(it->second);
    row[column] = it->second;
  }
  csv_ << "\n";
  jsonl_ << row.dump() << "\n";
  csv_.flush();
  jsonl_.flush();
}

bool plotMetrics(const std::string &csvPath, const std::string &png, const std::string &title,
                 const std::vector<std::vector<std::string>> &panels) {
  std::ifstream in(csvPath);
  std::string header;
  std::getline(in, header);
  std::vector<std::string> names;
  std::stringstream split(header);
  for (std::string name; std::getline(split, name, ',');)
    names.push_back(name);
  auto columnIndex = [&](const std::string &name) {
    auto it = std::find(names.begin(), names.end(), name);
    return it == names.end() ? 0 : int(it - names.begin()) + 1;
  };

  std::string scriptPath = png + ".gnuplot";
  {
    std::ofstream script(scriptPath);
    script << "set terminal pngcairo size 1000," << 360 * panels.size() << " noenhanced\n"
           << "set output '" << png << "'\n"
           << "set datafile separator ','\n"
           << "set key outside right\n"
           << "set grid\n"
           << "set multiplot layout " << panels.size() << ",1 title '" << title << "'\n";
    for (const auto &panel : panels) {
      script << "set xlabel 'step'\nplot ";
      bool first = true;
      for (const auto &column : panel) {
        int index = columnIndex(column);
        if (!index)
          continue;
        // `using 1:N` (not `($N)`) skips empty fields and keeps the line connected.
        script << (first ? "" : ", ") << "'" << csvPath << "' using 1:" << index
               << " with linespoints pointsize 0.4 title '" << column << "'";
        first = false;
      }
      if (first)
        script << "0 notitle";
      script << "\n";
    }
    script << "unset multiplot\n";
  }
  std::string command = "gnuplot '" + scriptPath + "' 2>'" + png + ".log'";
  if (std::system(command.c_str()) != 0) {
    std::fprintf(stderr, "warning: gnuplot failed (see %s.log); no plot written\n", png.c_str());
    return false;
  }
  return true;
}

std::map<int64_t, double> readJsonlColumn(const std::string &path, const std::string &column) {
  std::map<int64_t, double> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty())
      continue;
    auto row = nlohmann::json::parse(line);
    if (row.contains(column))
      out[row.at("step").get<int64_t>()] = row.at(column).get<double>();
  }
  return out;
}

} // namespace attn::train
