#include "troupe/wire/registry.hpp"

#include <algorithm>
#include <cctype>
#include <string>
#include <tuple>

namespace troupe::detail {

namespace {

/// A class or method met again (another TU, or TROUPE_REMOTE beside
/// TROUPE_REMOTE_DEFINE): alike, it adds nothing; otherwise the text of the problem.
template <class Entry>
std::string registered_again(const char* what, const Entry& first, const Entry& again) {
  if (first.name == again.name && (first.shape_of == again.shape_of || first.shape() == again.shape())) return {};
  return std::string("TROUPE_REMOTE: one ") + what + " registered twice, as '" + first.name + "' " + first.shape() +
         " and as '" + again.name + "' " + again.shape() + " (register it once, or alike)";
}

}  // namespace

WireRegistry& WireRegistry::instance() {
  static WireRegistry registry;
  return registry;
}

void WireRegistry::add_class(ClassEntry e) {
  std::lock_guard lk(mu_);
  if (frozen_.load()) {
    problems_.push_back("TROUPE_REMOTE: '" + e.name + "' registered after a runtime started; register at namespace scope");
    return;
  }
  if (auto it = class_tags_.find(e.tag); it != class_tags_.end()) {
    if (auto p = registered_again("class", classes_.at(it->second), e); !p.empty()) problems_.push_back(std::move(p));
    return;
  }
  if (std::any_of(e.name.begin(), e.name.end(), [](char c) { return std::isspace(static_cast<unsigned char>(c)); })) {
    problems_.push_back("TROUPE_REMOTE_AS: the wire name '" + e.name + "' has white space; name it without");
    return;
  }
  if (auto it = classes_.find(e.id); it != classes_.end()) {
    problems_.push_back("TROUPE_REMOTE: class '" + e.name + "' has the same wire id as '" + it->second.name +
                        "' (rename one, or register it once)");
    return;
  }
  class_tags_.emplace(e.tag, e.id);
  classes_.emplace(e.id, std::move(e));
}

void WireRegistry::add_method(MethodEntry e) {
  std::lock_guard lk(mu_);
  if (frozen_.load()) {
    problems_.push_back("TROUPE_REMOTE: '" + e.name + "' registered after a runtime started; register at namespace scope");
    return;
  }
  if (auto it = method_tags_.find(e.tag); it != method_tags_.end()) {
    if (auto p = registered_again("method", methods_.at(it->second), e); !p.empty()) problems_.push_back(std::move(p));
    return;
  }
  if (auto it = methods_.find(e.id); it != methods_.end()) {
    problems_.push_back("TROUPE_REMOTE: method '" + e.name + "' has the same wire id as '" + it->second.name +
                        "' (overloads must be registered under distinct names)");
    return;
  }
  method_tags_.emplace(e.tag, e.id);
  methods_.emplace(e.id, std::move(e));
}

void WireRegistry::freeze() {
  std::lock_guard lk(mu_);
  frozen_.store(true, std::memory_order_release);
}

const MethodEntry* WireRegistry::method(WireId id) const {
  std::unique_lock lk(mu_, std::defer_lock);
  if (!frozen_.load(std::memory_order_acquire)) lk.lock();
  auto it = methods_.find(id);
  return it == methods_.end() ? nullptr : &it->second;
}

const MethodEntry* WireRegistry::method(const MethodTag* tag) const {
  if (const void* known = tag->entry.load(std::memory_order_acquire)) return static_cast<const MethodEntry*>(known);
  std::unique_lock lk(mu_, std::defer_lock);
  const bool frozen = frozen_.load(std::memory_order_acquire);
  if (!frozen) lk.lock();
  auto it = method_tags_.find(tag);
  if (it == method_tags_.end()) return nullptr;
  const MethodEntry* e = &methods_.at(it->second);
  if (frozen) tag->entry.store(e, std::memory_order_release);  // every send after this skips the lookup
  return e;
}

const ClassEntry* WireRegistry::cls(WireId id) const {
  std::unique_lock lk(mu_, std::defer_lock);
  if (!frozen_.load(std::memory_order_acquire)) lk.lock();
  auto it = classes_.find(id);
  return it == classes_.end() ? nullptr : &it->second;
}

const ClassEntry* WireRegistry::cls(const TypeTag* tag) const {
  std::unique_lock lk(mu_, std::defer_lock);
  if (!frozen_.load(std::memory_order_acquire)) lk.lock();
  auto it = class_tags_.find(tag);
  if (it == class_tags_.end()) return nullptr;
  return &classes_.at(it->second);
}

std::vector<std::string> WireRegistry::table() const {
  // Shapes are made outside the lock: a user class's runs its own code.
  struct Row {
    WireId id;
    std::string head;
    std::string (*shape_of)();
  };
  std::vector<Row> rows;
  {
    std::lock_guard lk(mu_);
    for (const auto& [id, c] : classes_) rows.push_back({id, "class " + std::to_string(id) + " " + c.name, c.shape_of});
    for (const auto& [id, m] : methods_)
      rows.push_back({id, "method " + std::to_string(id) + " " + m.name, m.shape_of});
  }
  std::sort(rows.begin(), rows.end(),
            [](const Row& a, const Row& b) { return std::tie(a.id, a.head) < std::tie(b.id, b.head); });
  std::vector<std::string> out;
  out.reserve(rows.size());
  for (auto& r : rows) out.push_back(std::move(r.head) + " " + (r.shape_of != nullptr ? r.shape_of() : std::string()));
  return out;
}

std::vector<std::string> WireRegistry::problems() const {
  std::lock_guard lk(mu_);
  return problems_;
}

std::vector<std::string> split_method_names(std::string_view text) {
  std::vector<std::string> parts;
  std::string cur;
  int depth = 0;
  for (char c : text) {
    if (c == '<' || c == '(') ++depth;
    if (c == '>' || c == ')') --depth;
    if (c == ',' && depth == 0) {
      parts.push_back(cur);
      cur.clear();
      continue;
    }
    if (!std::isspace(static_cast<unsigned char>(c))) cur.push_back(c);
  }
  parts.push_back(cur);
  std::vector<std::string> names;
  for (std::size_t i = 1; i < parts.size(); ++i) {  // parts[0] is init<...>
    auto& p = parts[i];
    names.push_back(!p.empty() && p[0] == '&' ? p.substr(1) : p);
  }
  return names;
}

std::vector<std::string> method_wire_names(std::string_view class_name, std::string_view registration_text,
                                           std::string_view written_as) {
  auto squeeze = [](std::string_view text) {
    std::string out;
    for (char c : text)
      if (!std::isspace(static_cast<unsigned char>(c))) out.push_back(c);
    return out;
  };
  const std::string prefix = squeeze(class_name) + "::";
  const std::string written = written_as.empty() ? prefix : squeeze(written_as) + "::";
  auto names = split_method_names(registration_text);
  for (auto& n : names) {
    if (n.compare(0, prefix.size(), prefix) == 0) continue;
    n = n.compare(0, written.size(), written) == 0 ? prefix + n.substr(written.size()) : prefix + n;
  }
  return names;
}

}  // namespace troupe::detail
