// Chat templates of the ChatML, Llama 3, Llama 2 and Mistral families: the prompt text of a
// conversation as the model's own template writes it.
#include "tokenizer_internal.h"

#include "kascade/error.h"

namespace kascade::engine {

namespace tokenizer_detail {

std::string literal_between(const std::string& tmpl, const std::string& open, const std::string& close) {
  const size_t a = tmpl.find(open);
  if (a == std::string::npos) return "";
  const size_t start = a + open.size();
  const size_t b = tmpl.find(close, start);
  if (b == std::string::npos) return "";
  std::string raw = tmpl.substr(start, b - start);
  if (raw.find_first_of("{}'\"+") != std::string::npos) return "";
  std::string out;
  for (size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] == '\\' && i + 1 < raw.size() && raw[i + 1] == 'n') {
      out += '\n';
      ++i;
    } else {
      out += raw[i];
    }
  }
  return out;
}

}  // namespace tokenizer_detail

std::string Tokenizer::apply_chat_template(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const {
  KASCADE_CHECK(chat_format_ != ChatFormat::None,
                "this model has no supported chat template (supported: ChatML, Llama 3, Llama 2, Mistral)");
  std::string out;
  switch (chat_format_) {
    case ChatFormat::None:
      break;
    case ChatFormat::ChatML:
      if (!default_system_.empty() && (messages.empty() || messages[0].role != "system")) {
        out += "<|im_start|>system\n" + default_system_ + "<|im_end|>\n";
      }
      for (const ChatMessage& m : messages) out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
      if (add_generation_prompt) out += "<|im_start|>assistant\n";
      return out;
    case ChatFormat::Llama3:
      out += "<|begin_of_text|>";
      for (const ChatMessage& m : messages) {
        out += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n" + m.content + "<|eot_id|>";
      }
      if (add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      return out;
    case ChatFormat::Llama2:
    case ChatFormat::Mistral:
      // The [INST] templates: an optional leading system message joins the first user turn,
      // then user and assistant turns alternate. The prompt always ends after "[/INST]", so
      // there is no separate generation prompt.
      return inst_prompt(messages);
  }
  return out;
}

std::string Tokenizer::inst_prompt(const std::vector<ChatMessage>& messages) const {
  const bool llama2 = chat_format_ == ChatFormat::Llama2;
  KASCADE_CHECK(!chat_bos_.empty() && !chat_eos_.empty(),
                "chat: the model's [INST] template needs special BOS and EOS tokens, and this model "
                    << (chat_bos_.empty() ? "has no special BOS token" : "has no special EOS token"));
  auto trim = [](const std::string& s) {  // Jinja's strip()
    const size_t a = s.find_first_not_of(" \t\n\r\f\v");
    if (a == std::string::npos) return std::string();
    return s.substr(a, s.find_last_not_of(" \t\n\r\f\v") - a + 1);
  };
  size_t first = 0;
  std::string system;
  if (!messages.empty() && messages[0].role == "system") {
    system = messages[0].content;
    first = 1;
  }
  std::string out = llama2 ? "" : chat_bos_;
  for (size_t i = first; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    const bool user_turn = (i - first) % 2 == 0;
    KASCADE_CHECK(m.role == (user_turn ? "user" : "assistant"),
                  "chat: message " << i + 1 << " has role '" << m.role << "' where the [INST] template expects '"
                                   << (user_turn ? "user" : "assistant") << "' (a system message may only come first)");
    std::string content = m.content;
    if (i == first && first == 1) {
      content = llama2 ? "<<SYS>>\n" + system + "\n<</SYS>>\n\n" + content : system + "\n\n" + content;
    }
    if (user_turn) {
      out += (llama2 ? chat_bos_ : "") + "[INST] " + (llama2 ? trim(content) : content) + " [/INST]";
    } else {
      out += llama2 ? " " + trim(content) + " " + chat_eos_ : content + chat_eos_;
    }
  }
  return out;
}

}  // namespace kascade::engine
