// Tokenizer::from_hf_directory: a tokenizer from a Hugging Face directory's tokenizer.json, with
// BOS, stop tokens and the chat template from tokenizer_config.json, generation_config.json and
// config.json.
#include "tokenizer_internal.h"

#include <fstream>

#include <nlohmann/json.hpp>

#include "kascade/error.h"
#include "kascade/json.h"

namespace kascade::engine {

using tokenizer_detail::kGpt2Regex;
using tokenizer_detail::kMetaspace;

namespace {

using Json = nlohmann::json;

// A required member of a JSON object, or an error naming the file and the path.
const Json& member(const Json& j, const char* key, const std::string& where) {
  KASCADE_CHECK(j.is_object() && j.contains(key), where << ": missing '" << key << "'");
  return j[key];
}

bool flag(const Json& j, const char* key, bool fallback) {
  if (!j.is_object() || !j.contains(key) || j[key].is_null()) return fallback;
  return j[key].get<bool>();
}

// A regex that matches `text` literally (PCRE2's \Q..\E quoting, with \E itself spelled out).
std::string literal_regex(const std::string& text) {
  std::string out = "\\Q";
  for (size_t i = 0; i < text.size(); ++i) {
    if (text.compare(i, 2, "\\E") == 0) {
      out += "\\E\\\\E\\Q";
      ++i;
    } else {
      out += text[i];
    }
  }
  return out + "\\E";
}

// Appends the regexes of a `pre_tokenizer` node; sets *byte_level when a ByteLevel step is seen.
void collect_pre_tokenizer(const Json& node, const std::string& where, std::vector<std::string>& regexes,
                           bool& byte_level) {
  const std::string type = member(node, "type", where).get<std::string>();
  if (type == "Sequence") {
    for (const Json& step : member(node, "pretokenizers", where)) collect_pre_tokenizer(step, where, regexes, byte_level);
  } else if (type == "ByteLevel") {
    KASCADE_CHECK(!flag(node, "add_prefix_space", false),
                  where << ": ByteLevel with add_prefix_space is not supported");
    if (flag(node, "use_regex", true)) regexes.push_back(kGpt2Regex);
    byte_level = true;
  } else if (type == "Split") {
    const Json& pattern = member(node, "pattern", where);
    const std::string behavior = member(node, "behavior", where).get<std::string>();
    KASCADE_CHECK(behavior == "Isolated" && !flag(node, "invert", false),
                  where << ": Split with behavior '" << behavior << "'"
                        << (flag(node, "invert", false) ? " inverted" : "") << " is not supported (supported: Isolated)");
    if (pattern.contains("Regex")) {
      regexes.push_back(pattern["Regex"].get<std::string>());
    } else {
      regexes.push_back(literal_regex(member(pattern, "String", where).get<std::string>()));
    }
  } else if (type == "Digits") {
    regexes.push_back(flag(node, "individual_digits", false) ? "\\p{N}" : "\\p{N}+");
  } else {
    KASCADE_FAIL(where << ": pre_tokenizer '" << type
                       << "' is not supported (supported: ByteLevel, Split, Digits and Sequences of them)");
  }
}

// A token named in tokenizer_config.json: a string or {"content": string}.
std::string token_text(const Json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_object() && j.contains("content") && j["content"].is_string()) return j["content"].get<std::string>();
  return "";
}

// An id or a list of ids (eos_token_id in config.json / generation_config.json).
std::vector<int64_t> id_list(const Json& j) {
  std::vector<int64_t> out;
  if (j.is_number_integer()) out.push_back(j.get<int64_t>());
  if (j.is_array()) {
    for (const Json& e : j) {
      if (e.is_number_integer()) out.push_back(e.get<int64_t>());
    }
  }
  return out;
}

Json optional_json_file(const std::string& path) {
  std::ifstream probe(path);
  if (!probe.good()) return Json();
  return parse_json_strict(read_text_file(path), path);
}

}  // namespace

Tokenizer Tokenizer::from_hf_directory(const std::string& dir) {
  Spec spec;
  const std::string path = dir + "/tokenizer.json";
  spec.name = path;
  const Json doc = parse_json_strict(read_text_file(path), path);
  try {
    KASCADE_CHECK(doc.is_object(), path << ": not a JSON object");
    const Json& model = member(doc, "model", path);
    const std::string type = model.value("type", std::string("BPE"));
    KASCADE_CHECK(type == "BPE", path << ": model type '" << type << "' is not supported (supported: BPE)");
    // byte_fallback marks the SentencePiece-style BPE of Llama 2 and Mistral.
    spec.sentencepiece = flag(model, "byte_fallback", false);

    // Normalizers: NFC (Qwen; accepted for text that is already NFC, see check_nfc_stable), and
    // for SentencePiece-style BPE the Llama 2 pair Prepend("▁") + Replace(" ", "▁").
    const Json& normalizer = member(doc, "normalizer", path);
    bool spaces_to_metaspace = false;
    std::vector<Json> normalizers;
    if (normalizer.is_object() && normalizer.value("type", std::string()) == "Sequence") {
      for (const Json& n : member(normalizer, "normalizers", path)) normalizers.push_back(n);
    } else if (!normalizer.is_null()) {
      normalizers.push_back(normalizer);
    }
    for (const Json& n : normalizers) {
      const std::string ntype = n.value("type", std::string("?"));
      if (ntype == "NFC") {
        spec.nfc = true;
      } else if (spec.sentencepiece && ntype == "Prepend" && n.value("prepend", std::string()) == kMetaspace) {
        spec.dummy_prefix = DummyPrefix::EverySpan;  // tokenizers prepends to every span between added tokens
      } else if (spec.sentencepiece && ntype == "Replace" && n.contains("pattern") &&
                 n["pattern"].value("String", std::string()) == " " && n.value("content", std::string()) == kMetaspace) {
        spaces_to_metaspace = true;
      } else {
        KASCADE_FAIL(path << ": normalizer '" << ntype
                          << "' is not supported (supported: none, NFC for text already in NFC; with byte_fallback "
                             "also Prepend(\"\u2581\") and Replace(\" \", \"\u2581\"))");
      }
    }
    KASCADE_CHECK(!model.contains("dropout") || model["dropout"].is_null(), path << ": BPE dropout is not supported");
    for (const char* affix : {"continuing_subword_prefix", "end_of_word_suffix"}) {
      KASCADE_CHECK(!model.contains(affix) || model[affix].is_null() || model[affix].get<std::string>().empty(),
                    path << ": BPE " << affix << " is not supported");
    }
    spec.ignore_merges = flag(model, "ignore_merges", false);

    // Ids: the vocabulary, then the added tokens (which may repeat a vocabulary entry's id).
    const Json& vocab = member(model, "vocab", path);
    KASCADE_CHECK(vocab.is_object(), path << ": model.vocab is not an object");
    const Json& added = doc.contains("added_tokens") && !doc["added_tokens"].is_null() ? doc["added_tokens"] : Json::array();
    int64_t size = 0;
    for (const auto& [piece, id] : vocab.items()) {
      KASCADE_CHECK(id.is_number_unsigned() && id.get<uint64_t>() < (1u << 30),
                    path << ": vocabulary entry '" << piece << "' has a bad id " << id.dump());
      size = std::max<int64_t>(size, id.get<int64_t>() + 1);
    }
    for (const Json& a : added) {
      const Json& id = member(a, "id", path);
      KASCADE_CHECK(id.is_number_unsigned() && id.get<uint64_t>() < (1u << 30), path << ": added token id " << id.dump() << " is bad");
      size = std::max<int64_t>(size, id.get<int64_t>() + 1);
    }
    std::vector<uint8_t> seen(static_cast<size_t>(size), 0);
    spec.pieces.resize(static_cast<size_t>(size));
    spec.special.assign(static_cast<size_t>(size), 0);
    for (const auto& [piece, id] : vocab.items()) {
      const size_t i = id.get<size_t>();
      KASCADE_CHECK(!seen[i], path << ": id " << i << " is given to two vocabulary entries");
      spec.pieces[i] = piece;
      seen[i] = 1;
    }
    for (const Json& a : added) {
      const size_t i = a["id"].get<size_t>();
      const std::string content = member(a, "content", path).get<std::string>();
      KASCADE_CHECK(!flag(a, "lstrip", false) && !flag(a, "rstrip", false) && !flag(a, "single_word", false),
                    path << ": added token '" << content << "' uses lstrip/rstrip/single_word (not supported)");
      KASCADE_CHECK(!seen[i] || spec.pieces[i] == content,
                    path << ": added token '" << content << "' takes id " << i << " of '" << spec.pieces[i] << "'");
      // Every added token is matched in the text before pre-tokenization, and decodes to its
      // content, as `tokenizers` does (the GGUF path treats control and user-defined alike).
      spec.pieces[i] = content;
      spec.special[i] = 1;
      seen[i] = 1;
    }
    for (int64_t i = 0; i < size; ++i) {
      KASCADE_CHECK(seen[static_cast<size_t>(i)], path << ": token id " << i << " has no vocabulary entry");
    }

    for (const Json& m : member(model, "merges", path)) {
      if (m.is_string()) {  // "left right"
        const std::string text = m.get<std::string>();
        const size_t space = text.find(' ', 1);
        KASCADE_CHECK(space != std::string::npos, path << ": merge '" << text << "' has no space");
        spec.merges.emplace_back(text.substr(0, space), text.substr(space + 1));
      } else {  // ["left", "right"]
        KASCADE_CHECK(m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string(),
                      path << ": merge " << m.dump() << " is neither \"a b\" nor [a, b]");
        spec.merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
      }
    }

    const Json& pre = member(doc, "pre_tokenizer", path);
    const Json& decoder = member(doc, "decoder", path);
    if (spec.sentencepiece) {
      // Spaces become "▁" in the normalizer or in a Metaspace pre-tokenizer, which may also add
      // the dummy prefix ("first": only before the span that starts the text) and split words.
      if (!pre.is_null()) {
        const std::string ptype = pre.value("type", std::string("?"));
        KASCADE_CHECK(ptype == "Metaspace", path << ": pre_tokenizer '" << ptype
                                                 << "' is not supported with byte_fallback (supported: none, Metaspace)");
        KASCADE_CHECK(pre.value("replacement", kMetaspace) == kMetaspace,
                      path << ": Metaspace replacement other than \"\u2581\" is not supported");
        const std::string scheme = pre.contains("prepend_scheme")
                                       ? pre["prepend_scheme"].get<std::string>()
                                       : (flag(pre, "add_prefix_space", true) ? "always" : "never");
        KASCADE_CHECK(scheme == "always" || scheme == "first" || scheme == "never",
                      path << ": Metaspace prepend_scheme '" << scheme << "' is not supported");
        KASCADE_CHECK(scheme == "never" || spec.dummy_prefix == DummyPrefix::None,
                      path << ": both the normalizer and the Metaspace pre-tokenizer add a dummy prefix");
        if (scheme != "never") {
          spec.dummy_prefix = scheme == "first" ? DummyPrefix::FirstSpan : DummyPrefix::EverySpan;
          spec.prefix_unless_space = true;
        }
        spec.split_at_metaspace = flag(pre, "split", true);
        spaces_to_metaspace = true;
      }
      KASCADE_CHECK(spaces_to_metaspace, path << ": byte_fallback BPE without Replace(\" \", \"\u2581\") or a Metaspace "
                                                 "pre-tokenizer is not supported");
      // Decoders: Metaspace, or the Llama 2 sequence Replace("▁", " "), ByteFallback, Fuse, Strip(" ", 1, 0).
      std::vector<Json> steps;
      if (decoder.is_object() && decoder.value("type", std::string()) == "Sequence") {
        for (const Json& d : member(decoder, "decoders", path)) steps.push_back(d);
      } else if (!decoder.is_null()) {
        steps.push_back(decoder);
      }
      bool spaces_back = false, bytes_back = false;
      for (const Json& d : steps) {
        const std::string dtype = d.value("type", std::string("?"));
        if (dtype == "Metaspace") {
          const std::string scheme = d.contains("prepend_scheme")
                                         ? d["prepend_scheme"].get<std::string>()
                                         : (flag(d, "add_prefix_space", true) ? "always" : "never");
          spec.strip_leading_space = scheme != "never";
          spaces_back = true;
        } else if (dtype == "Replace" && d.contains("pattern") && d["pattern"].value("String", std::string()) == kMetaspace &&
                   d.value("content", std::string()) == " ") {
          spaces_back = true;
        } else if (dtype == "ByteFallback") {
          bytes_back = true;
        } else if (dtype == "Strip" && d.value("content", std::string()) == " " && d.value("start", 0) <= 1 &&
                   d.value("stop", 0) == 0) {
          spec.strip_leading_space = d.value("start", 0) == 1;
        } else {
          KASCADE_CHECK(dtype == "Fuse", path << ": decoder '" << dtype
                                             << "' is not supported with byte_fallback (supported: Metaspace, Replace(\"\u2581\", \" \"), "
                                                "ByteFallback, Fuse, Strip(\" \", 0 or 1, 0))");
        }
      }
      KASCADE_CHECK(spaces_back && bytes_back, path << ": the decoder does not turn \"\u2581\" back into spaces and <0xNN> "
                                                       "tokens into bytes (supported: Metaspace or Replace + ByteFallback)");
    } else {
      bool byte_level = false;
      if (!pre.is_null()) collect_pre_tokenizer(pre, path, spec.regexes, byte_level);
      KASCADE_CHECK(byte_level, path << ": the pre_tokenizer has no ByteLevel step: not a byte-level BPE tokenizer");
      KASCADE_CHECK(decoder.is_null() || decoder.value("type", std::string()) == "ByteLevel",
                    path << ": decoder '" << decoder.value("type", std::string("?")) << "' is not supported (supported: ByteLevel)");
    }

    // BOS: a TemplateProcessing post-processor that starts with a special token adds it.
    std::string bos_text;
    const Json& post = member(doc, "post_processor", path);
    std::vector<Json> processors;
    if (!post.is_null()) {
      if (post.value("type", std::string()) == "Sequence") {
        for (const Json& p : member(post, "processors", path)) processors.push_back(p);
      } else {
        processors.push_back(post);
      }
    }
    for (const Json& p : processors) {
      const std::string ptype = p.value("type", std::string());
      if (ptype == "ByteLevel") continue;
      KASCADE_CHECK(ptype == "TemplateProcessing", path << ": post_processor '" << ptype
                                                        << "' is not supported (supported: TemplateProcessing, ByteLevel)");
      const Json& single = member(p, "single", path);
      if (!single.empty() && single[0].contains("SpecialToken")) {
        bos_text = member(single[0]["SpecialToken"], "id", path).get<std::string>();
        spec.add_bos = true;
      }
    }

    const Json config = optional_json_file(dir + "/tokenizer_config.json");
    const Json generation = optional_json_file(dir + "/generation_config.json");
    const Json model_config = optional_json_file(dir + "/config.json");
    std::unordered_map<std::string, int32_t> id_of;
    for (size_t i = 0; i < spec.pieces.size(); ++i) id_of.emplace(spec.pieces[i], static_cast<int32_t>(i));
    auto lookup = [&](const std::string& text, const char* what) {
      auto it = id_of.find(text);
      KASCADE_CHECK(it != id_of.end(), dir << ": " << what << " '" << text << "' is not in the vocabulary");
      return it->second;
    };
    if (config.is_object()) {
      if (config.contains("bos_token") && !token_text(config["bos_token"]).empty() && bos_text.empty()) {
        bos_text = token_text(config["bos_token"]);
      }
      if (config.contains("add_bos_token") && config["add_bos_token"].is_boolean()) {
        spec.add_bos = spec.add_bos || config["add_bos_token"].get<bool>();
      }
      if (config.contains("eos_token") && !token_text(config["eos_token"]).empty()) {
        spec.stop_ids.push_back(lookup(token_text(config["eos_token"]), "eos_token"));
      }
      if (config.contains("chat_template")) {
        const Json& tmpl = config["chat_template"];
        if (tmpl.is_string()) spec.chat_template = tmpl.get<std::string>();
        // A list of named templates: the default one (the first when none is named so).
        for (const Json& named : tmpl.is_array() ? tmpl : Json::array()) {
          if (spec.chat_template.empty() || named.value("name", std::string()) == "default") {
            spec.chat_template = named.value("template", std::string());
          }
        }
      }
    }
    if (spec.chat_template.empty()) {  // newer transformers save the template as its own file
      std::ifstream jinja(dir + "/chat_template.jinja");
      if (jinja.good()) spec.chat_template = read_text_file(dir + "/chat_template.jinja");
    }
    if (!bos_text.empty()) {
      spec.bos_id = lookup(bos_text, "bos_token");
    } else if (model_config.is_object() && model_config.contains("bos_token_id")) {
      const std::vector<int64_t> ids = id_list(model_config["bos_token_id"]);
      if (!ids.empty()) spec.bos_id = static_cast<int32_t>(ids[0]);
    }
    for (const Json* j : {&generation, &model_config}) {
      if (j->is_object() && j->contains("eos_token_id")) {
        for (int64_t id : id_list((*j)["eos_token_id"])) spec.stop_ids.push_back(static_cast<int32_t>(id));
      }
    }
  } catch (const Json::exception& e) {  // a value of the wrong JSON type somewhere above
    KASCADE_FAIL(path << ": unexpected JSON value: " << e.what());
  }
  return assemble(spec);
}

}  // namespace kascade::engine
