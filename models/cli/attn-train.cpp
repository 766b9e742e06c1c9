// attn-train RECIPE [--config FILE.yaml|json] [--key=value ...]: the training recipes' CLI.
// Exit codes: 0 done, 2 usage or data error (message on stderr), 1 anything else.
#include "models/recipes/Recipes.h"

#include <c10/util/Exception.h>

#include <cstdio>
#include <exception>

namespace {

void printUsage(std::FILE *out) {
  std::fprintf(out, "usage: attn-train RECIPE [--config FILE.yaml|json] [--key=value ...]\n"
                    "       attn-train RECIPE --help   (the recipe's options and defaults)\n\nrecipes:\n");
  for (const auto &[name, entry] : attn::recipes::allRecipes())
    std::fprintf(out, "  %-15s %s\n", name.c_str(), entry.summary.c_str());
}

} // namespace

int main(int argc, char **argv) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    printUsage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  std::string recipe = argv[1];
  const auto &recipes = attn::recipes::allRecipes();
  auto it = recipes.find(recipe);
  if (it == recipes.end()) {
    std::fprintf(stderr, "attn-train: unknown recipe '%s'\n", recipe.c_str());
    printUsage(stderr);
    return 2;
  }
  try {
    auto config = attn::train::Config::fromArgs(std::vector<std::string>(argv + 2, argv + argc));
    return it->second.run(config);
  } catch (const attn::train::UsageError &e) {
    std::fprintf(stderr, "attn-train %s: error: %s\n", recipe.c_str(), e.what());
    return 2;
  } catch (const c10::Error &e) {
    std::fprintf(stderr, "attn-train %s: error: %s\n", recipe.c_str(), e.what_without_backtrace());
    return 1;
  } catch (const std::exception &e) {
    std::fprintf(stderr, "attn-train %s: error: %s\n", recipe.c_str(), e.what());
    return 1;
  }
}
