"""Sentence templates and name pools of the synthetic DuIE generator (devkit.synth).

Placeholders: ``{s}`` the subject, ``{o}`` the object(s), ``{kind}`` a word for the
subject's kind (电影, 小说, ...). ``full`` templates name the subject; ``tail`` templates
continue a sentence about a subject already named. No template may state a fact of
another schema predicate, or the gold triplets of a sentence would be incomplete.
"""

from __future__ import annotations

from dataclasses import dataclass

# Entity kinds the generator can build; works are written inside 《》 in the text.
WORK_KINDS = ("film", "show", "song", "album", "book", "work")


@dataclass(frozen=True, slots=True)
class Spec:
    subject: tuple[str, ...]  # entity kinds that may be the subject
    object: str  # entity kind of the object
    full: tuple[str, ...]
    tail: tuple[str, ...]
    multi: bool = False  # the object may be a "、" list, one triplet per item
    inverse: str = ""  # a predicate the sentence also states with subject and object swapped


PERSON = ("person",)
FILM = ("film",)
SONG = ("song",)
COMPANY = ("company",)
INSTITUTION = ("company", "school")

TEMPLATES: dict[str, Spec] = {
    "毕业院校": Spec(PERSON, "school",
        ("{s}毕业于{o}", "{s}是{o}的毕业生", "{s}从{o}毕业后进入演艺圈", "{s}本科毕业于{o}"),
        ("毕业于{o}", "是{o}的毕业生")),
    "嘉宾": Spec(("show",), "person",
        ("{o}作为嘉宾参加了{s}的录制", "{s}邀请了{o}担任嘉宾", "{kind}{s}本期的嘉宾是{o}"),
        ("嘉宾是{o}", "邀请{o}担任嘉宾"), multi=True),
    "配音": Spec(PERSON, "person",
        ("{s}为动画角色{o}配音", "{o}的配音演员是{s}", "{s}负责{o}一角的配音"),
        ("为角色{o}配音", "还为{o}配音")),
    "主题曲": Spec(FILM, "song",
        ("{o}是{s}的主题曲", "{s}的主题曲是{o}", "{kind}{s}以{o}作为主题曲"),
        ("主题曲为{o}", "主题曲{o}广为传唱")),
    "代言人": Spec(COMPANY, "person",
        ("{o}担任{s}的代言人", "{s}宣布{o}成为其品牌代言人", "{s}的代言人是{o}"),
        ("代言人是{o}", "邀请{o}担任代言人"), multi=True),
    "所属专辑": Spec(SONG, "album",
        ("{s}收录于专辑{o}中", "{s}是专辑{o}中的一首{kind}", "{s}出自专辑{o}"),
        ("收录于专辑{o}", "出自专辑{o}")),
    "父亲": Spec(PERSON, "person",
        ("{s}的父亲是{o}", "{o}是{s}的父亲", "{s}是{o}之子"),
        ("父亲是{o}", "其父为{o}")),
    "作者": Spec(("book",), "person",
        ("{s}是{o}创作的{kind}", "{s}的作者是{o}", "{o}创作的{kind}{s}于近日出版"),
        ("作者是{o}", "由{o}创作")),
    "上映时间": Spec(FILM, "date",
        ("{s}于{o}上映", "{kind}{s}在{o}正式上映", "{s}的上映时间为{o}"),
        ("于{o}上映", "{o}正式上映")),
    "母亲": Spec(PERSON, "person",
        ("{s}的母亲是{o}", "{o}是{s}的母亲", "{s}由母亲{o}抚养长大"),
        ("母亲是{o}", "其母为{o}")),
    "专业代码": Spec(("major",), "code",
        ("{s}专业的专业代码为{o}", "{s}专业，代码{o}", "专业代码为{o}的{s}专业设立较早"),
        ("专业代码为{o}", "代码是{o}")),
    "占地面积": Spec(INSTITUTION, "land",
        ("{s}占地面积{o}", "{s}占地{o}", "{s}总占地面积约{o}"),
        ("占地{o}", "占地面积达{o}")),
    "邮政编码": Spec(("region",), "postcode",
        ("{s}的邮政编码是{o}", "{s}邮编{o}", "{s}的邮编为{o}"),
        ("邮政编码为{o}", "邮编是{o}")),
    "票房": Spec(FILM, "box",
        ("{s}的票房达到{o}", "{s}累计票房{o}", "{kind}{s}最终收获{o}票房"),
        ("累计票房{o}", "票房突破{o}")),
    "注册资本": Spec(COMPANY, "capital",
        ("{s}注册资本{o}", "{s}的注册资本为{o}", "{s}成立时注册资本达{o}"),
        ("注册资本{o}", "注册资本为{o}")),
    "主角": Spec(("book",), "person",
        ("{s}的主角是{o}", "{kind}{s}讲述了主人公{o}的成长故事", "{s}以{o}为主角"),
        ("主角是{o}", "主人公为{o}"), multi=True),
    "妻子": Spec(PERSON, "person",
        ("{s}的妻子是{o}", "{s}与妻子{o}育有一子", "{s}娶了{o}"),
        ("妻子是{o}", "与{o}结婚多年"), inverse="丈夫"),
    "编剧": Spec(FILM, "person",
        ("{s}的编剧是{o}", "{o}担任{s}的编剧", "{kind}{s}由{o}编剧"),
        ("编剧为{o}", "由{o}担任编剧"), multi=True),
    "气候": Spec(("region",), "climate",
        ("{s}属于{o}", "{s}的气候类型为{o}", "{s}的气候属于{o}"),
        ("属{o}", "气候类型为{o}")),
    "歌手": Spec(SONG, "person",
        ("{s}是由{o}演唱的{kind}", "{o}演唱的{s}广受好评", "{s}的原唱是{o}"),
        ("由{o}演唱", "演唱者是{o}"), multi=True),
    "获奖": Spec(PERSON, "award",
        ("{s}获得{o}", "{s}荣获{o}", "{o}颁给了{s}"),
        ("曾荣获{o}", "获得过{o}")),
    "校长": Spec(("school",), "person",
        ("{s}的校长是{o}", "{o}担任{s}校长", "{o}出任{s}校长一职"),
        ("现任校长为{o}", "校长是{o}")),
    "创始人": Spec(COMPANY, "person",
        ("{s}由{o}创办", "{o}创立了{s}", "{s}的创始人是{o}"),
        ("由{o}创办", "创始人是{o}"), multi=True),
    "首都": Spec(("country",), "city",
        ("{s}的首都是{o}", "{o}是{s}的首都", "{s}首都{o}是全国最大的城市"),
        ("首都为{o}", "首都是{o}")),
    "丈夫": Spec(PERSON, "person",
        ("{s}的丈夫是{o}", "{o}是{s}的丈夫", "{s}嫁给了{o}"),
        ("丈夫是{o}", "嫁给了{o}"), inverse="妻子"),
    "朝代": Spec(PERSON, "dynasty",
        ("{s}是{o}著名诗人", "{s}，{o}人", "{o}名将{s}"),
        ("{o}人", "生活在{o}")),
    "饰演": Spec(PERSON, "person",
        ("{s}在剧中饰演{o}", "{s}饰演{o}一角", "{o}一角由{s}饰演"),
        ("饰演{o}", "在剧中扮演{o}")),
    "面积": Spec(("region",), "area",
        ("{s}总面积{o}", "{s}面积约{o}", "{s}的面积为{o}"),
        ("面积{o}", "总面积约{o}")),
    "总部地点": Spec(COMPANY, "city",
        ("{s}总部位于{o}", "{s}的总部设在{o}", "{s}总部在{o}"),
        ("总部位于{o}", "总部设在{o}")),
    "祖籍": Spec(PERSON, "region",
        ("{s}祖籍{o}", "{s}的祖籍是{o}", "{s}祖籍为{o}"),
        ("祖籍{o}", "原籍{o}")),
    "人口数量": Spec(("region",), "population",
        ("{s}人口约{o}", "{s}总人口{o}", "{s}的户籍人口为{o}"),
        ("人口{o}", "常住人口约{o}")),
    "制片人": Spec(FILM, "person",
        ("{s}的制片人是{o}", "{o}担任{s}的制片人", "{o}出任{kind}{s}的制片人"),
        ("制片人为{o}", "由{o}担任制片人"), multi=True),
    "修业年限": Spec(("major",), "years",
        ("{s}专业学制{o}", "{s}专业的修业年限为{o}", "{s}专业的学制是{o}"),
        ("学制{o}", "修业年限为{o}")),
    "所在城市": Spec(("scenic",), "city",
        ("{s}位于{o}", "{s}坐落在{o}", "{o}的{s}是著名景点"),
        ("位于{o}", "坐落于{o}")),
    "董事长": Spec(COMPANY, "person",
        ("{s}董事长{o}表示将加大投入", "{o}担任{s}董事长", "{s}的董事长是{o}"),
        ("董事长为{o}", "现任董事长是{o}")),
    "作词": Spec(SONG, "person",
        ("{s}由{o}作词", "{s}的作词人是{o}", "{o}为{s}填词"),
        ("由{o}作词", "作词者是{o}"), multi=True),
    "改编自": Spec(FILM, "work",
        ("{s}改编自{o}", "{s}根据{o}改编", "{s}是根据{o}改编的{kind}"),
        ("改编自{o}", "根据{o}改编")),
    "出品公司": Spec(FILM, "company",
        ("{s}由{o}出品", "{o}出品的{kind}{s}即将上映", "{s}的出品公司是{o}"),
        ("由{o}出品", "出品方为{o}"), multi=True),
    "导演": Spec(FILM, "person",
        ("{s}是由{o}执导的{kind}", "{o}导演的{s}讲述了一个感人的故事", "{s}的导演是{o}"),
        ("由{o}执导", "导演是{o}"), multi=True),
    "作曲": Spec(SONG, "person",
        ("{s}由{o}作曲", "{o}为{s}谱曲", "{s}的作曲者是{o}"),
        ("由{o}作曲", "作曲是{o}"), multi=True),
    "主演": Spec(FILM, "person",
        ("{s}由{o}主演", "{o}主演的{kind}{s}获得好评", "{kind}{s}的主演是{o}"),
        ("由{o}主演", "{o}领衔主演"), multi=True),
    "主持人": Spec(("show",), "person",
        ("{s}由{o}主持", "{o}主持的{s}收视率很高", "{s}的主持人是{o}"),
        ("由{o}主持", "主持人是{o}"), multi=True),
    "成立日期": Spec(INSTITUTION, "date",
        ("{s}成立于{o}", "{s}创建于{o}", "{s}于{o}正式成立"),
        ("成立于{o}", "创建于{o}")),
    "简称": Spec(INSTITUTION, "abbr",
        ("{s}简称{o}", "{s}，简称{o}", "{s}的简称是{o}"),
        ("简称{o}", "简称为{o}")),
    "海拔": Spec(("mountain", "region"), "altitude",
        ("{s}海拔{o}", "{s}的海拔高度为{o}", "{s}平均海拔约{o}"),
        ("海拔{o}", "海拔高度达{o}")),
    "号": Spec(PERSON, "hao",
        ("{s}，号{o}", "{s}号{o}", "{s}自号{o}"),
        ("号{o}", "自号{o}")),
    "国籍": Spec(PERSON, "country",
        ("{s}，{o}籍演员", "{s}的国籍是{o}", "{s}拥有{o}国籍"),
        ("{o}籍", "国籍为{o}")),
    "官方语言": Spec(("country",), "language",
        ("{s}的官方语言是{o}", "{o}是{s}的官方语言", "{s}以{o}为官方语言"),
        ("官方语言为{o}", "官方语言是{o}"), multi=True),
}

# Words for ``{kind}``, chosen once per sentence and subject kind so a sentence stays consistent.
KIND_WORDS: dict[str, tuple[str, ...]] = {
    "film": ("电影", "电视剧", "网络剧", "动画电影"),
    "book": ("小说", "长篇小说", "网络小说"),
    "song": ("歌曲", "单曲"),
    "show": ("综艺节目", "真人秀节目", "访谈节目"),
}

# --- name pools: every generated name is built from these ---------------------------------------

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蒋蔡余杜叶程苏魏吕丁沈姚卢姜崔钟谭陆汪范金石廖贾夏韦方白邹孟熊秦邱江薛段雷侯龙史陶黎贺顾毛郝龚邵万钱严武戴莫孔汤"
COMPOUND_SURNAMES = ("欧阳", "司马", "上官", "诸葛", "慕容")
GIVEN_CHARS = (
    "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超霞平刚桂华玉兰萍红建文辉力志宏鹏飞俊峰雪梅琳晨宇浩然轩欣怡思远佳琪"
    "梓涵博天嘉雨晴子诗若凡一鸣婷颖昊泽睿瑶晓东海波春秋立新永和安康乐宁德光振国庆福荣"
)
WORK_HEADS = (
    "青春", "长安", "江湖", "星辰", "大海", "风云", "远方", "故乡", "少年", "岁月", "山河", "明月", "归途", "烈火",
    "春天", "白夜", "黎明", "追光", "繁花", "寻梦", "天涯", "孤城", "雪原", "花开", "微光", "流年", "北方", "南风",
    "夜航", "时光", "彩虹", "森林", "古城", "飞鸟", "晚霞", "浪花", "初心", "旷野",
)
TITLE_TAILS: dict[str, tuple[str, ...]] = {
    "film": ("传奇", "往事", "的秘密", "之恋", "人生", "时代", "密码", "行动", "追踪", "风暴", "谜案", "战记"),
    "book": ("往事", "的秘密", "日记", "物语", "笔记", "纪事", "回忆录", "札记", "之书", "人生"),
    "song": ("之歌", "恋曲", "的约定", "小夜曲", "之梦", "的声音", "随想", "谣"),
    "show": ("大本营", "好声音", "挑战", "之夜", "来了", "会客厅", "大冒险", "的旅行"),
}
TITLE_SUFFIXES = ("第二部", "第三部", "第四部", "2", "3", "之觉醒", "之归来", "之决战", "之序章", "前传", "外传")
BRAND_CHARS = "华星恒泰远盛嘉鼎新宏达安信和睿锦飞云腾凯天中金瑞博创联众智汇明"
INDUSTRIES = ("科技", "传媒", "文化", "生物", "电子", "网络", "影业", "食品", "能源", "汽车", "医药", "物流")
COMPANY_SUFFIXES = ("股份有限公司", "集团有限公司", "有限公司")
# School suffix -> the short form used in its 简称 (北江师范大学 -> 北江师大; 北江大学 -> 北大).
SCHOOL_SUFFIXES = {
    "大学": "大", "师范大学": "师大", "理工大学": "理工", "第一中学": "一中",
    "实验中学": "实验", "外国语学院": "外院", "职业技术学院": "职院",
}
PLACE_CHARS = "江山阳安宁平东西南北河湖清华兴昌泉川海云龙凤永丰宝德新林石桥长武临盐黄青白金玉"
CITIES = (
    "北京", "上海", "广州", "深圳", "杭州", "成都", "武汉", "南京", "西安", "重庆", "天津", "苏州", "长沙", "郑州",
    "青岛", "厦门", "昆明", "大连", "沈阳", "济南", "合肥", "福州", "哈尔滨", "兰州",
)
REGION_SUFFIXES = ("市", "县", "区", "镇")
MOUNTAIN_SUFFIXES = ("山", "峰", "岭")
SCENIC_SUFFIXES = ("寺", "公园", "古镇", "湖", "塔", "古城遗址")
COUNTRIES = (
    "中国", "美国", "日本", "法国", "德国", "英国", "意大利", "加拿大", "澳大利亚", "巴西", "印度", "俄罗斯", "韩国",
    "泰国", "西班牙", "埃及", "阿根廷", "墨西哥", "新加坡", "马来西亚",
)
TRANSLIT_CHARS = "阿巴卡拉尼亚斯坦达利马纳塔维洛奥乌克索里图贝蒙加"
COUNTRY_SUFFIXES = ("国", "尼亚", "斯坦", "共和国", "王国")
LANGUAGES = (
    "汉语", "英语", "法语", "德语", "西班牙语", "阿拉伯语", "葡萄牙语", "俄语", "日语", "韩语", "意大利语", "马来语",
    "泰语",
)
CLIMATES = (
    "温带季风气候", "亚热带季风气候", "热带季风气候", "温带大陆性气候", "高原山地气候", "地中海气候", "热带雨林气候",
    "温带海洋性气候",
)
AWARD_NAMES = ("金鸡奖", "百花奖", "金像奖", "金马奖", "华表奖", "飞天奖", "金鹰奖", "白玉兰奖")
AWARD_CATEGORIES = ("最佳男主角", "最佳女主角", "最佳导演", "最佳男配角", "最佳女配角", "最佳新人", "最佳编剧")
MAJORS = (
    "计算机科学与技术", "软件工程", "法学", "临床医学", "汉语言文学", "机械工程", "金融学", "会计学", "土木工程",
    "电子信息工程", "英语", "新闻学", "数学与应用数学", "物理学", "化学", "生物科学", "建筑学", "市场营销",
)
DYNASTIES = ("秦朝", "汉朝", "西汉", "东汉", "三国", "西晋", "东晋", "隋朝", "唐朝", "北宋", "南宋", "元朝", "明朝", "清朝")
HAO_CHARS = "东坡青莲易安六一石湖松雪梅竹柳泉云山溪樵白鹤"
HAO_SUFFIXES = ("居士", "山人", "先生", "道人", "老人", "子")
YEARS_OF_STUDY = ("两年", "三年", "四年", "五年", "六年", "八年", "2年", "3年", "4年", "5年")
# Quantity kind -> (unit, low, high, with one decimal?) choices.
UNITS: dict[str, tuple[tuple[str, float, float, bool], ...]] = {
    "area": (("平方公里", 50, 20000, False), ("万平方公里", 1, 150, True)),
    "population": (("万人", 1, 2000, True), ("万", 1, 2000, True), ("人", 1000, 99999, False)),
    "altitude": (("米", 50, 8000, False),),
    "land": (("亩", 50, 5000, False), ("平方米", 1000, 900000, False), ("公顷", 10, 500, False)),
    "capital": (("万元", 50, 50000, False), ("亿元", 1, 100, True), ("万美元", 10, 5000, False)),
    "box": (("亿元", 0.5, 60, True), ("万元", 100, 9999, False), ("亿", 1, 50, True)),
}

# Sentences without any schema fact: ``{p}`` a person, ``{c}`` a city, ``{w}`` a film title.
FILLERS = (
    "{p}在{c}度过了一个愉快的假期",
    "{p}说这次旅行让他收获很多",
    "{p}和朋友们在{c}的街头散步",
    "{w}受到了观众的广泛好评",
    "很多观众表示很喜欢{w}",
    "{c}今天的天气非常好",
    "{p}最近在{c}参加了一场活动",
    "{p}认为{w}值得一看",
)
