#include "wire_agreement.hpp"

#include <cstdint>
#include <map>
#include <set>
#include <sstream>
#include <string_view>

#include "troupe/wire/registry.hpp"

namespace troupe::detail {

namespace {

constexpr std::size_t kMostReported = 20;

struct Row {
  std::string name, shape;
  int rank = 0;
};

/// Every rank's table, gathered ("kind id name shape" lines).
std::vector<std::vector<std::string>> gather_tables(MPI_Comm comm, const std::vector<std::string>& table) {
  int n = 0;
  MPI_Comm_size(comm, &n);
  std::string mine;
  for (const auto& line : table) mine += line + "\n";
  int length = static_cast<int>(mine.size());
  std::vector<int> lengths(static_cast<std::size_t>(n)), offsets(static_cast<std::size_t>(n));
  MPI_Allgather(&length, 1, MPI_INT, lengths.data(), 1, MPI_INT, comm);
  int total = 0;
  for (std::size_t r = 0; r < lengths.size(); ++r) {
    offsets[r] = total;
    total += lengths[r];
  }
  std::string all(static_cast<std::size_t>(total), '\0');
  MPI_Allgatherv(mine.data(), length, MPI_CHAR, all.data(), lengths.data(), offsets.data(), MPI_CHAR, comm);
  std::vector<std::vector<std::string>> out(static_cast<std::size_t>(n));
  for (std::size_t r = 0; r < out.size(); ++r) {
    std::istringstream in(all.substr(static_cast<std::size_t>(offsets[r]), static_cast<std::size_t>(lengths[r])));
    for (std::string line; std::getline(in, line);) out[r].push_back(line);
  }
  return out;
}

}  // namespace

std::vector<std::string> wire_disagreements(MPI_Comm comm, const std::vector<std::string>& table,
                                            const std::vector<std::string>& local_problems) {
  int n = 0, me = 0;
  MPI_Comm_size(comm, &n);
  MPI_Comm_rank(comm, &me);
  WireId digest = fnv1a64("");
  for (const auto& line : table) digest = digest * 31 + fnv1a64(line);
  const std::uint64_t mine[2] = {digest, local_problems.size()};
  std::vector<std::uint64_t> all(2 * static_cast<std::size_t>(n));
  MPI_Allgather(mine, 2, MPI_UINT64_T, all.data(), 2, MPI_UINT64_T, comm);

  std::vector<std::string> out;
  bool differ = false;
  for (int r = 0; r < n; ++r) {
    const auto own = all[2 * static_cast<std::size_t>(r) + 1];
    if (r == me) {
      out.insert(out.end(), local_problems.begin(), local_problems.end());
    } else if (own != 0) {
      out.push_back("troupe: node " + std::to_string(r) + " found " + std::to_string(own) +
                    " registration problem(s) of its own (its error lists them)");
    }
    differ = differ || all[2 * static_cast<std::size_t>(r)] != all[0];
  }
  if (!differ) return out;

  // The tables differ (an MPMD job): what two ranks both register must agree.
  std::map<std::string, Row> first;  // "kind id" -> where it was first seen
  std::set<std::string> reported;
  std::size_t more = 0;
  const auto tables = gather_tables(comm, table);
  for (int r = 0; r < n; ++r) {
    for (const auto& line : tables[static_cast<std::size_t>(r)]) {
      std::istringstream in(line);
      std::string kind, id;
      Row row{{}, {}, r};
      in >> kind >> id >> row.name >> row.shape;
      const std::string key = kind + " " + id;
      auto [it, fresh] = first.emplace(key, row);
      if (fresh || (it->second.name == row.name && it->second.shape == row.shape)) continue;
      if (!reported.insert(key).second) continue;
      if (out.size() >= kMostReported) {
        ++more;
        continue;
      }
      const Row& was = it->second;
      if (was.name != row.name) {
        out.push_back("TROUPE_REMOTE: " + kind + " '" + row.name + "' on node " + std::to_string(r) +
                      " has the same wire id as '" + was.name + "' on node " + std::to_string(was.rank) +
                      " (rename one)");
      } else {
        out.push_back("TROUPE_REMOTE: " + kind + " '" + row.name + "' is registered as " + was.shape + " on node " +
                      std::to_string(was.rank) + " but as " + row.shape + " on node " + std::to_string(r) +
                      ": the binaries of a job must register it with the same types (one shared header)");
      }
    }
  }
  if (more != 0) out.push_back("... and " + std::to_string(more) + " more disagreement(s)");
  return out;
}

}  // namespace troupe::detail
